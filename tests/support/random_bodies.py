"""Random registration bodies and history rows with awkward values, for the tests that hold a fast path to the
models (``tests/store/test_fastrows.py``: live ingestion and /bulk; ``tests/history/test_fast.py``: the history
import): unicode, big integers, floats msgspec and ``json.dumps`` spell differently, nested objects, optional
fields present or not."""

from __future__ import annotations

import random
from typing import Any


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value, nested at most 2 deep."""
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.choice([0, -3, 10**20, 2**70, rng.randrange(-(10**20), 10**20)])
    if kind == 1:
        return rng.choice([0.1, 1e16, 1.5e-7, 2.5, -0.0, 123456789.123, 1e300, 5e-324, 0.00001, rng.uniform(-1e6, 1e6)])
    if kind == 2:
        return rng.choice(["plain", "café", "日本語", "emoji 😀", 'quote " and \\ backslash', "tab\tnew\nline", "3e5"])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.random()
    if kind in (6, 7):
        return {f"k{i}{rng.choice(['', 'é', 'Z'])}": random_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_session(rng: random.Random, i: int, t0: int, *, history: bool = False) -> dict[str, Any]:
    """A valid session body number ``i`` at about ``t0``. ``history``: a history file's row (``created_at`` and
    ``search_results`` always there, and half of the rows carry ``events``); else a live registration body
    (either may be omitted)."""
    body: dict[str, Any] = {"session_id": f"r{i}-{rng.choice(['a', 'ü', 'x' * 100])}"}
    if history or rng.random() < 0.7:
        body["created_at"] = t0 + i
    if rng.random() < 0.8:
        body["search_query"] = rng.choice([None, "q", "früh", "a\u2028b", "x" * 300])
    results = []
    for k in range(rng.randrange(5)):
        r: dict[str, Any] = {"object_id": f"o{k}{rng.choice(['', 'ß'])}"}
        if rng.random() < 0.7:
            r["rank"] = rng.choice([k, k + 0.5, None, 1e17, 3e-6])
        if rng.random() < 0.6:
            r["meta"] = rng.choice([None, {"score": rng.random()}, {"nested": {"x": random_value(rng)}}])
        results.append(r)
    if history or rng.random() < 0.9:
        body["search_results"] = results
    for key in ("search_meta", "payload_filter"):
        if rng.random() < 0.6:
            body[key] = rng.choice([None, {"a": random_value(rng), "b": random_value(rng)}])
    if rng.random() < 0.4:
        body["sort_by"] = rng.choice([None, {"field": "stars", "order": rng.choice(["asc", "desc"])}])
    if rng.random() < 0.7:
        body["user_id"] = rng.choice([None, "u1", "üser", "u" * 256])
    for key in ("is_irrelevant", "is_payload_search"):
        if rng.random() < 0.3:
            body[key] = rng.random() < 0.5
    if history and rng.random() < 0.5:
        body["events"] = [
            {"event_id": f"e{k}", "object_id": "o1", "created_at": t0 + 10 + k, "meta": None}
            | ({"event_type": rng.choice(["click", "view", "x" * 64])} if rng.random() < 0.5 else {})
            | ({"meta": {"rank": k, "why": "é", "v": random_value(rng, 1)}} if rng.random() < 0.5 else {})
            for k in range(rng.randrange(4))
        ]
    return body
