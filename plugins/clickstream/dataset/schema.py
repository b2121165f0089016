"""The dataset's layout: file names, the two tables' Arrow schemas, part names.

What the columns mean, and why two flat tables: docs/operators-and-dags.md, "The dataset".
"""

from __future__ import annotations

import re

import pyarrow as pa

FORMAT = "clickstream-dataset/1"
MANIFEST = "_manifest.json"
METRICS = "metrics.json"
TABLES = ("sessions", "events")
_PART_RE = re.compile(r"^part-(\d{12})\.parquet$")

_RESULT = pa.struct([("object_id", pa.string()), ("rank", pa.float64()), ("meta", pa.string())])

SESSIONS_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("session_number", pa.int64()),
        ("session_id", pa.string()),
        ("search_query", pa.string()),
        ("search_results", pa.list_(_RESULT)),
        ("search_meta", pa.string()),
        ("payload_filter", pa.string()),
        ("sort_by", pa.struct([("field", pa.string()), ("order", pa.string())])),
        ("user_id", pa.string()),
        ("created_at", pa.int64()),
        ("is_irrelevant", pa.bool_()),
        ("n_events", pa.int32()),
    ]
)

EVENTS_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("session_number", pa.int64()),
        ("session_id", pa.string()),
        ("event_index", pa.int32()),
        ("event_id", pa.string()),
        ("object_id", pa.string()),
        ("event_type", pa.string()),
        ("created_at", pa.int64()),
        ("meta", pa.string()),
    ]
)


def part_name(first_number: int) -> str:
    """File name of the part whose first session has ``first_number``.

    :param first_number: the session number of the part's first session.
    """
    return f"part-{first_number:012d}.parquet"


def part_number(name: str) -> int | None:
    """The first session number a part file's name carries; None if ``name`` is not a part file's name.

    :param name: a file name, e.g. ``part-000000000001.parquet``.
    """
    match = _PART_RE.match(name)
    return int(match.group(1)) if match else None


#: The training-signal tables the labels step writes beside ``sessions`` and ``events`` (issue 22): each in
#: its folder, part by part, listed in the manifest's ``labels`` (:mod:`clickstream.dataset.labels`).
LABEL_TABLES = ("propensities", "judgments", "pairs")

PROPENSITIES_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("position", pa.int32()),
        ("impressions", pa.int64()),
        ("clicks", pa.int64()),
        ("raw_ctr", pa.float64()),
        ("theta", pa.float64()),
        ("theta_se", pa.float64()),
        ("identified", pa.bool_()),
        ("reason", pa.string()),
    ]
)

JUDGMENTS_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("query", pa.string()),
        ("object_id", pa.string()),
        ("impressions", pa.int64()),
        ("clicks", pa.int64()),
        ("mean_position", pa.float64()),
        ("raw_ctr", pa.float64()),
        ("gamma", pa.float64()),
        ("effective_sample_size", pa.float64()),
    ]
)

PAIRS_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("session_id", pa.string()),
        ("query", pa.string()),
        ("query_key", pa.string()),
        ("positive_object_id", pa.string()),
        ("positive_position", pa.int32()),
        ("negative_object_id", pa.string()),
        ("negative_position", pa.int32()),
        ("weight", pa.float64()),
    ]
)

#: The Arrow schema of each label table.
LABEL_SCHEMAS = {"propensities": PROPENSITIES_SCHEMA, "judgments": JUDGMENTS_SCHEMA, "pairs": PAIRS_SCHEMA}
