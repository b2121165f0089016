"""The Parquet dataset of a released batch: layout, writing shard by shard, the manifest, reading back.

Store-independent: the writer takes the store's pages in this layout (:class:`clickstream.store.ExtractPage`,
as yielded by ``iter_extract_pages``) and any pathlib-like object-storage path (Airflow's ``ObjectStoragePath``, a
``UPath``); no SQL and no Airflow imports here.

Layout under ``<base_path>/<batch_id>/``::

    sessions/part-<first session_number, 12 digits>.parquet   one row per session
    events/part-<same number>.parquet                           one row per event of those sessions
    propensities/part-000000000001.parquet                     the labels step (clickstream.dataset.labels):
    judgments/part-<first row, 12 digits>.parquet               the examination curve, raw CTR vs debiased
    pairs/part-<first session_number>.parquet                   relevance per (query, object), training pairs
    _manifest.json                                             written last: parts, counts, shards, labels
    metrics.json                                               the batch's metrics (metrics step)

Two flat tables rather than one table with a nested ``events`` list: the events are the fact table of
click models and CTR studies, and flat tables load straight into pandas without exploding nested lists;
sessions without events stay visible in ``sessions``; both tables' row counts check against the store.
Free-form JSON objects (``search_meta``, ``payload_filter``, ``search_results[].meta``, ``events.meta``)
are stored as JSON text, because their keys differ from session to session and Parquet needs one schema
for every part.

Part files are named after the first session number they hold, so a shard ``(after, until]`` owns
exactly the parts whose number falls in its range: a (re)run of a shard first deletes those, then writes
its parts again, and a retry after a failure half-way ends with exactly the batch's rows. The manifest
is written last; a reader that finds ``_manifest.json`` finds a complete dataset. The user's view of all
this: docs/operators-and-dags.md, "The dataset".

Modules, one concern each (every public name is re-exported here):

* :mod:`~clickstream.dataset.schema`: file names, the Arrow schemas of both tables, part names;
* :mod:`~clickstream.dataset.pages`: the store's pages as Arrow tables, and the prefetch thread;
* :mod:`~clickstream.dataset.writer`: :class:`ShardWriter`, the part files of a shard;
* :mod:`~clickstream.dataset.manifest`: writing, reading and summarising ``_manifest.json``;
* :mod:`~clickstream.dataset.labels`: the labels step's three tables (docs/training-signal.md);
* :mod:`~clickstream.dataset.readers`: a table as a DataFrame, the REST API's session objects.
"""

from __future__ import annotations

from clickstream.dataset.labels import clear_labels, write_batch_labels
from clickstream.dataset.manifest import manifest_summary, read_manifest, remove_manifest, write_manifest
from clickstream.dataset.pages import extract_page_tables, prefetched
from clickstream.dataset.readers import read_table, to_api_sessions
from clickstream.dataset.schema import (
    EVENTS_SCHEMA,
    FORMAT,
    JUDGMENTS_SCHEMA,
    LABEL_TABLES,
    MANIFEST,
    METRICS,
    PAIRS_SCHEMA,
    PROPENSITIES_SCHEMA,
    SESSIONS_SCHEMA,
    TABLES,
    part_name,
    part_number,
)
from clickstream.dataset.writer import PartInfo, ShardWriter, clear_shard, list_parts

__all__ = [
    "EVENTS_SCHEMA",
    "FORMAT",
    "JUDGMENTS_SCHEMA",
    "LABEL_TABLES",
    "MANIFEST",
    "METRICS",
    "PAIRS_SCHEMA",
    "PROPENSITIES_SCHEMA",
    "SESSIONS_SCHEMA",
    "TABLES",
    "PartInfo",
    "ShardWriter",
    "clear_labels",
    "clear_shard",
    "extract_page_tables",
    "list_parts",
    "manifest_summary",
    "part_name",
    "part_number",
    "prefetched",
    "read_manifest",
    "read_table",
    "remove_manifest",
    "to_api_sessions",
    "write_batch_labels",
    "write_manifest",
]
