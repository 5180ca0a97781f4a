"""Named registries: the one place a name list lives, so config checks and CLI choices derive from it.

A registry maps a name (what users type) to an entry (a builder, a rule, a
table row). Adding a backbone or a weighting rule is one registration; every
``--help`` listing, config check and error message follows from it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hrseg.errors import HrsegError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> entry map whose lookups fail with a one-line error listing the choices."""

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind  # "segmenter", "weight combination", ... (for messages)
        self.option = option  # the CLI flag that takes these names (for messages)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise HrsegError(self.unknown(name)) from None

    def check(self, name: str) -> str:
        """``name`` itself if registered; otherwise the one-line error."""
        self[name]
        return name

    def unknown(self, name: object) -> str:
        return f"{self.option}: unknown {self.kind} {name!r} (choose from {', '.join(self._entries)})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def choices(self, names: tuple[str, ...] | None = None) -> type[enum.Enum]:
        """A str Enum of the names (or a subset), for Typer options whose ``--help`` lists the choices."""
        chosen = self.names() if names is None else names
        return enum.Enum(self.kind.title().replace(" ", ""), {n: n for n in chosen}, type=str)  # type: ignore[return-value]
