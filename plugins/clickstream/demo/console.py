"""The demo's terminal: its steps with their timings for a person, everything else into a log file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")


class Console:
    """Progress for a person on the terminal, while everything else (Airflow's logs, task output) goes to
    a log file: file descriptors 1 and 2 are redirected, so output of child processes is captured too.

    :param log_path: the log file; appended to, its folder is created.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.out: TextIO = sys.stdout
        self._saved: tuple[int, int] | None = None

    def __enter__(self) -> Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved is not None:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            os.close(self._saved[0])
            os.close(self._saved[1])
            self._saved = None

    def say(self, text: str = "") -> None:
        """Print one line on the terminal.

        :param text: the line.
        """
        print(text, file=self.out, flush=True)

    def step(self, label: str, fn: Callable[[], T], detail: Callable[[T], str] | None = None) -> T:
        """Run ``fn`` as one numbered step: ``label ... done in 1.2 s (detail)``; log marks where it begins.

        :param label: what the step does.
        :param fn: the step.
        :param detail: what to add after the timing, from ``fn``'s result.
        """
        print(f"\n===== demo: {label} =====", flush=True)  # into the log, to find a step's output there
        self.out.write(f"  {label} ... ")
        self.out.flush()
        started = time.monotonic()
        try:
            result = fn()
        except BaseException:
            self.say("FAILED")
            raise
        extra = f" ({detail(result)})" if detail else ""
        self.say(f"done in {time.monotonic() - started:.1f} s{extra}")
        return result
