"""Ctrl-C and SIGTERM as requests: the first one stops training after the current step (with a checkpoint).

SLURM (preemption, time limit), Kubernetes and ``docker stop`` send SIGTERM
first and SIGKILL only after a grace period, so SIGTERM is handled exactly like
the first Ctrl-C: the step in flight completes, ``last.pt`` is written, and the
command exits with :data:`EXIT_SIGTERM` and the resume command. A second signal
aborts at once.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from hrseg.console import console

#: exit codes of a training stopped by a request: 128 + the signal's number, as a shell reports a kill by it
EXIT_SIGINT = 128 + int(signal.SIGINT)  # 130
EXIT_SIGTERM = 128 + int(signal.SIGTERM)  # 143
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def handles_sigterm() -> bool:
    """False under torchrun's elastic agent: there SIGTERM is how the agent stops a group to restart it
    (a peer died, so a step cannot finish), and ``--auto-resume`` continues from the last checkpoint."""
    return not os.environ.get("TORCHELASTIC_RUN_ID")


class InterruptFlag:
    """The first SIGINT/SIGTERM asks the loop to stop after the current step (and checkpoint); a second aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""  # "SIGINT" or "SIGTERM": which request stopped the run
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "InterruptFlag":
        try:
            for sig in SIGNALS if handles_sigterm() else (signal.SIGINT,):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        how = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        console.print(f"[yellow]{how}: finishing this step and writing a checkpoint ({how} again aborts)[/]")

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            if previous is not None:
                signal.signal(sig, previous)
        self._previous = {}
