"""The scale-out test's report: which worker ran which shard, printed in pytest's terminal summary (so it
shows without ``-s``, also when the suite runs in pytest-xdist workers)."""

from __future__ import annotations

from tests.support import report

TITLE = "scale-out: CeleryExecutor workers and S3"


def report_line(line: str) -> None:
    """Print ``line`` now (seen with ``-s``) and in the terminal summary at the end."""
    report.line(TITLE, line)
