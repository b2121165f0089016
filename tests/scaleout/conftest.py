"""The scale-out test's report: which worker ran which shard, printed in pytest's terminal summary (so it
shows without ``-s``)."""

from __future__ import annotations

import pytest

#: Lines the scale-out tests add (``report_line``); printed at the end of the session.
REPORT: list[str] = []


def report_line(line: str) -> None:
    """Print ``line`` now (seen with ``-s``) and in the terminal summary at the end."""
    print(line)
    REPORT.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("scale-out: CeleryExecutor workers and S3")
        for line in REPORT:
            terminalreporter.write_line(line)
