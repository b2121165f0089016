"""Reading a complete dataset back: a table as a DataFrame, and the REST API's session objects rebuilt.

Both read exactly the parts the manifest lists (:mod:`clickstream.dataset.manifest`); how to read the files
without this package: docs/operators-and-dags.md, "The dataset".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from clickstream.dataset.manifest import read_manifest
from clickstream.dataset.schema import EVENTS_SCHEMA, LABEL_SCHEMAS, LABEL_TABLES, SESSIONS_SCHEMA, TABLES

if TYPE_CHECKING:
    import pandas as pd


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None, or NaN from pandas


def _py(value: Any) -> Any:
    return None if _missing(value) else value


def _unjson(value: Any) -> Any:
    return None if _missing(value) else json.loads(value)


def read_table(root: Any, table: str, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """One table (``sessions``, ``events``, or a label table: ``propensities``, ``judgments``, ``pairs``) of a
    complete dataset as a DataFrame, in part order.

    Reads exactly the parts the manifest lists (whatever else the folder holds).

    :param root: the dataset root ``<base_path>/<batch_id>``.
    :param table: ``sessions``, ``events``, ``propensities``, ``judgments`` or ``pairs``.
    :param manifest: the dataset's manifest, if already read; default: read it from ``root``.
    :raises ValueError: an unknown table, or a label table of a dataset written without the labels step.
    """
    if table not in TABLES and table not in LABEL_TABLES:
        raise ValueError(f"table must be one of {TABLES + LABEL_TABLES}, got {table!r}")
    manifest = manifest or read_manifest(root)
    if table in LABEL_TABLES:
        if "labels" not in manifest:
            raise ValueError(f"table {table!r}: this dataset has no labels (written without the labels step)")
        schema = LABEL_SCHEMAS[table]
        parts = manifest["labels"]["tables"][table]["parts"]
    else:
        schema = SESSIONS_SCHEMA if table == "sessions" else EVENTS_SCHEMA
        parts = manifest["parts"]
    tables = []
    for part in parts:
        with (root / table / part["name"]).open("rb") as f:
            tables.append(pq.read_table(f, schema=schema))
    arrow = pa.concat_tables(tables) if tables else schema.empty_table()
    return arrow.to_pandas()


def to_api_sessions(sessions: pd.DataFrame, events: pd.DataFrame) -> list[dict[str, Any]]:
    """Rebuild the ``GET /batch/sessions`` session objects from the two tables (JSON text parsed back).

    :param sessions: the ``sessions`` table, as :func:`read_table` returns it.
    :param events: the ``events`` table of the same sessions.
    """
    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in events.sort_values(["session_number", "event_index"]).to_dict("records"):
        by_session.setdefault(e["session_id"], []).append(
            {
                "event_id": e["event_id"],
                "object_id": e["object_id"],
                "event_type": e["event_type"],
                "created_at": int(e["created_at"]),
                "meta": _unjson(e["meta"]),
            }
        )
    out = []
    for s in sessions.sort_values("session_number").to_dict("records"):
        results = s["search_results"]
        out.append(
            {
                "session_number": int(s["session_number"]),
                "session_id": s["session_id"],
                "search_query": _py(s["search_query"]),
                "search_results": [
                    {"object_id": r["object_id"], "rank": _py(r["rank"]), "meta": _unjson(r["meta"])}
                    for r in (list(results) if results is not None else [])
                ],
                "search_meta": _unjson(s["search_meta"]),
                "payload_filter": _unjson(s["payload_filter"]),
                "sort_by": _py(s["sort_by"]),
                "user_id": _py(s["user_id"]),
                "created_at": int(s["created_at"]),
                "is_irrelevant": bool(s["is_irrelevant"]),
                "events": by_session.get(s["session_id"], []),
            }
        )
    return out
