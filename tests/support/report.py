"""Lines a test adds to pytest's end-of-run terminal summary, also from pytest-xdist workers.

The main process calls :func:`start` (``tests/conftest.py``'s ``pytest_configure``), which creates a file
and names it in the environment, so workers started afterwards inherit it; :func:`line` appends to it from
any process; :func:`collect` reads and removes it for the terminal summary.
"""

from __future__ import annotations

import os
import tempfile

ENV = "CLICKSTREAM_TEST_REPORT_FILE"


def start() -> None:
    fd, path = tempfile.mkstemp(prefix="clickstream-test-report-", suffix=".txt")
    os.close(fd)
    os.environ[ENV] = path


def line(title: str, text: str) -> None:
    """Print ``text`` now (seen with ``-s``) and under ``title`` in the terminal summary at the end."""
    print(text)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{title}\t{text}\n")


def collect() -> dict[str, list[str]]:
    """The lines added so far, by title, in order; the file is removed."""
    path = os.environ.get(ENV)
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rows = f.read().splitlines()
    os.unlink(path)
    sections: dict[str, list[str]] = {}
    for row in rows:
        title, _, text = row.partition("\t")
        sections.setdefault(title, []).append(text)
    return sections
