"""History files for the import's tests (tests/history/ and the hook/operator tests in tests/airflow/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """``rows`` as JSON Lines at ``path`` (a str row is written as it is: a broken line on purpose)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def history_session(sid: str, user: str = "u1", created_at: int = 1_701_234_567_890, **extra: Any) -> dict[str, Any]:
    """A session row of a history file: one result, ``user``'s, at ``created_at`` (ms)."""
    return {
        "session_id": sid,
        "search_query": f"q {sid}",
        "search_results": [{"object_id": "o1", "rank": 1.0}],
        "user_id": user,
        "created_at": created_at,
        **extra,
    }


def mixed_file(tmp_path: Path) -> Path:
    """10 rows; line 3 has a seconds timestamp, line 7 is not JSON."""
    rows: list[Any] = [history_session(f"m{i}") for i in range(1, 11)]
    rows[2] = history_session("m3", created_at=1_701_234_567)
    rows[6] = '{"session_id": "m7", '
    return write_jsonl(tmp_path / "mixed.jsonl", rows)
