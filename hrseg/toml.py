"""TOML on every Python hrseg supports: the standard library's ``tomllib`` (3.11+), else the ``tomli`` package.

``pyproject.toml`` allows Python 3.10, which has no ``tomllib``; ``tomli`` is
the same parser published separately (a dependency there only).
"""

from __future__ import annotations

import importlib
from typing import Any

from hrseg.errors import HrsegError


def toml_parser() -> Any:
    """The module whose ``loads`` parses TOML: tomllib, or tomli where tomllib is missing."""
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise HrsegError("reading TOML needs Python 3.11+ or the tomli package (pip install tomli)")


def loads(text: str) -> dict[str, Any]:
    """Parse TOML ``text``; a syntax error is a ValueError (both parsers' errors derive from it)."""
    return toml_parser().loads(text)
