"""The Parquet dataset of a released batch: layout, writing shard by shard, the manifest, reading back.

Store-independent: the writer takes the store's pages in this layout (:class:`clickstream.store.ExtractPage`,
as yielded by ``iter_extract_pages``) and any pathlib-like object-storage path (Airflow's ``ObjectStoragePath``, a
``UPath``); no SQL and no Airflow imports here.

Layout under ``<base_path>/<batch_id>/``::

    sessions/part-<first session_number, 12 digits>.parquet   one row per session
    events/part-<same number>.parquet                           one row per event of those sessions
    _manifest.json                                             written last: parts, counts, shards
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
is written last; a reader that finds ``_manifest.json`` finds a complete dataset.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd

    from clickstream.store.rows import ExtractPage

log = logging.getLogger(__name__)

FORMAT = "clickstream-dataset/1"
MANIFEST = "_manifest.json"
METRICS = "metrics.json"
TABLES = ("sessions", "events")
_PART_RE = re.compile(r"^part-(\d{12})\.parquet$")

_RESULT = pa.struct([("object_id", pa.string()), ("rank", pa.float64()), ("meta", pa.string())])

SESSIONS_SCHEMA = pa.schema([
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
])

EVENTS_SCHEMA = pa.schema([
    ("batch_id", pa.string()),
    ("session_number", pa.int64()),
    ("session_id", pa.string()),
    ("event_index", pa.int32()),
    ("event_id", pa.string()),
    ("object_id", pa.string()),
    ("event_type", pa.string()),
    ("created_at", pa.int64()),
    ("meta", pa.string()),
])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None, or NaN from pandas


def _py(value: Any) -> Any:
    return None if _missing(value) else value


def _unjson(value: Any) -> Any:
    return None if _missing(value) else json.loads(value)


def part_name(first_number: int) -> str:
    """File name of the part whose first session has ``first_number``."""
    return f"part-{first_number:012d}.parquet"


def extract_page_tables(page: Any) -> tuple[pa.Table, pa.Table]:
    """A store's ``ExtractPage`` (this layout as JSON lines) as a sessions table and an events table.

    Arrow's JSON reader parses the lines straight into columns: no Python object per value.
    """
    return _read_lines(page.sessions_json, SESSIONS_SCHEMA), _read_lines(page.events_json, EVENTS_SCHEMA)


def _read_lines(data: bytes, schema: pa.Schema) -> pa.Table:
    if not data:
        return schema.empty_table()
    table = pa_json.read_json(
        io.BytesIO(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"))
    return table.select(schema.names).cast(schema)


_END = object()


def _prefetched(pages: Iterable[Any]) -> Iterator[Any]:
    """Yield ``pages`` while a background thread already reads the next one (at most one ahead).

    Reading a page waits on the database, writing it uses this process's CPU: overlapped, an extraction
    takes about the longer of the two instead of their sum. Memory: one more page. An error while reading
    is raised here; when the consumer stops early (an error while writing), the reader stops too.
    """
    ahead: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not hand_over((page, None)):
                    return
            hand_over((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            hand_over((_END, err))

    reader = threading.Thread(target=read, name="clickstream-extract-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            page, err = ahead.get()
            if page is _END:
                if err is not None:
                    raise err
                return
            yield page
    finally:
        stop.set()
        reader.join()


@dataclass
class PartInfo:
    """One part: a file in ``sessions/`` and its namesake in ``events/``."""

    name: str
    first_number: int
    last_number: int
    sessions: int
    events: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first_number": self.first_number, "last_number": self.last_number,
                "sessions": self.sessions, "events": self.events}


def _in_shard(number: int, after: int, until: int | None) -> bool:
    return number > after and (until is None or number <= until)


def list_parts(root: Any) -> dict[str, list[Any]]:
    """The part files present under a dataset root, per table (missing folders count as empty)."""
    found: dict[str, list[Any]] = {}
    for table in TABLES:
        folder = root / table
        found[table] = sorted((p for p in folder.iterdir() if _PART_RE.match(p.name)), key=lambda p: p.name) \
            if folder.exists() else []
    return found


def clear_shard(root: Any, after_number: int, until_number: int | None) -> int:
    """Delete the parts a shard ``(after_number, until_number]`` owns (from an earlier, failed attempt)."""
    removed = 0
    for paths in list_parts(root).values():
        for path in paths:
            if _in_shard(int(_PART_RE.match(path.name).group(1)), after_number, until_number):
                path.unlink()
                removed += 1
    return removed


def remove_manifest(root: Any) -> bool:
    """Delete the manifest (the dataset is being rewritten); True if there was one."""
    path = root / MANIFEST
    if path.exists():
        path.unlink()
        return True
    return False


class ShardWriter:
    """Write one shard of a batch as part files, memory bounded by one page.

    Each page becomes a row group; a part file holds up to ``pages_per_part`` pages. Override
    :meth:`on_page` to observe progress (tests use it to simulate a crash half-way).

    :param root: the dataset root ``<base_path>/<batch_id>`` (an ``ObjectStoragePath`` or ``UPath``).
    :param batch_id: written into every row.
    :param after_number: the shard's lower bound (exclusive).
    :param until_number: the shard's upper bound (inclusive); None: no bound.
    :param pages_per_part: pages per part file.
    :param logger: where progress goes.
    """

    def __init__(self, root: Any, batch_id: str, *, after_number: int = 0, until_number: int | None = None,
                 pages_per_part: int = 10, logger: logging.Logger | Any | None = None):
        if pages_per_part < 1:
            raise ValueError(f"pages_per_part must be >= 1, got {pages_per_part}")
        self.root = root
        self.batch_id = batch_id
        self.after_number = after_number
        self.until_number = until_number
        self.pages_per_part = pages_per_part
        self.log = logger or log

    def on_page(self, pages_done: int, sessions: int, events: int) -> None:
        """Called after each page is written (hook for subclasses)."""

    def write(self, pages: Iterable[ExtractPage]) -> dict[str, Any]:
        """Write every page of the shard; returns the shard's result (bounds, counts, parts)."""
        removed = clear_shard(self.root, self.after_number, self.until_number)
        if removed:
            self.log.info("removed %d part file(s) of an earlier attempt of shard (%s, %s]",
                          removed, self.after_number, self.until_number)
        for table in TABLES:
            (self.root / table).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        parts: list[PartInfo] = []
        pages_done = sessions = events = 0
        writers: tuple[Any, ...] | None = None
        current: PartInfo | None = None
        try:
            for page in _prefetched(pages):  # the next page is read while this one is written
                if not page:
                    continue
                s_table, e_table = extract_page_tables(page)
                first_number, last_number = page.first_number, page.last_number
                if writers is None:
                    current = PartInfo(part_name(first_number), first_number, 0, 0, 0)
                    writers = self._open(current.name)
                writers[1].write_table(s_table)
                writers[3].write_table(e_table)
                current.last_number = last_number
                current.sessions += s_table.num_rows
                current.events += e_table.num_rows
                pages_done += 1
                sessions += s_table.num_rows
                events += e_table.num_rows
                if pages_done % self.pages_per_part == 0:
                    self._close(writers)
                    writers = None
                    parts.append(current)
                elapsed = max(time.monotonic() - started, 1e-9)
                self.log.info("shard (%s, %s]: page %d written, %d sessions, %d events so far (%.0f sessions/s)",
                              self.after_number, self.until_number, pages_done, sessions, events,
                              sessions / elapsed)
                self.on_page(pages_done, sessions, events)
            if writers is not None:
                self._close(writers)
                writers = None
                parts.append(current)
        finally:
            if writers is not None:  # failing half-way: close what is open; the retry deletes it
                self._close(writers, quiet=True)
        elapsed = time.monotonic() - started
        self.log.info("shard (%s, %s] done: %d pages, %d sessions, %d events in %d part(s), %.1f s (%.0f rows/s)",
                      self.after_number, self.until_number, pages_done, sessions, events, len(parts), elapsed,
                      (sessions + events) / max(elapsed, 1e-9))
        return {"after_number": self.after_number, "until_number": self.until_number, "sessions": sessions,
                "events": events, "pages": pages_done, "parts": [p.as_dict() for p in parts]}

    def _open(self, name: str) -> tuple[Any, ...]:
        s_file = (self.root / "sessions" / name).open("wb")
        e_file = (self.root / "events" / name).open("wb")
        return (s_file, pq.ParquetWriter(s_file, SESSIONS_SCHEMA, compression="zstd"),
                e_file, pq.ParquetWriter(e_file, EVENTS_SCHEMA, compression="zstd"))

    @staticmethod
    def _close(writers: tuple[Any, ...], quiet: bool = False) -> None:
        for obj in (writers[1], writers[0], writers[3], writers[2]):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - only when already failing
                if not quiet:
                    raise


def write_manifest(root: Any, batch_id: str, shards: Sequence[dict[str, Any]], *,
                   extra: dict[str, Any] | None = None, logger: Any | None = None) -> dict[str, Any]:
    """Combine the shards' results into ``_manifest.json``, written last; returns the manifest.

    Part files that no shard reported (left by an earlier run with another shard plan) are deleted first,
    so the folder holds exactly the manifest's parts. Shards must not overlap.
    """
    logger = logger or log
    shards = sorted(shards, key=lambda s: s["after_number"])
    for prev, nxt in zip(shards, shards[1:]):
        if prev["until_number"] is None or prev["until_number"] > nxt["after_number"]:
            raise ValueError(f"shards overlap: ({prev['after_number']}, {prev['until_number']}] and "
                             f"({nxt['after_number']}, {nxt['until_number']}]")
    parts = sorted((p for s in shards for p in s["parts"]), key=lambda p: p["first_number"])
    names = {p["name"] for p in parts}
    for table, paths in list_parts(root).items():
        for path in paths:
            if path.name not in names:
                logger.warning("removing stray part %s/%s (not written by this run's shards)", table, path.name)
                path.unlink()
    manifest = {
        "format": FORMAT,
        "batch_id": batch_id,
        "path": str(root),
        "sessions": sum(s["sessions"] for s in shards),
        "events": sum(s["events"] for s in shards),
        "tables": {t: f"{t}/" for t in TABLES},
        "parts": parts,
        "shards": [{k: s[k] for k in ("after_number", "until_number", "sessions", "events", "pages")}
                   for s in shards],
        "written_at": int(time.time() * 1000),
        **(extra or {}),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("dataset of batch %s complete: %d sessions, %d events, %d part(s); manifest %s",
                batch_id, manifest["sessions"], manifest["events"], len(parts), root / MANIFEST)
    return manifest


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The small part of a manifest fit for XCom: counts and paths, not the part list."""
    root = manifest["path"].rstrip("/")
    return {
        "batch_id": manifest["batch_id"],
        "sessions": manifest["sessions"],
        "events": manifest["events"],
        "parts": len(manifest["parts"]),
        "shards": len(manifest["shards"]),
        "paths": {"root": root, "manifest": f"{root}/{MANIFEST}",
                  **{t: f"{root}/{t}/" for t in TABLES}},
    }


# ---------------------------------------------------------------------------------------------- reading


def read_manifest(root: Any) -> dict[str, Any]:
    """The manifest of a dataset root; FileNotFoundError when the dataset is missing or incomplete."""
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: no complete dataset at {root}")
    return json.loads(path.read_text())


def read_table(root: Any, table: str, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """One table (``sessions`` or ``events``) of a complete dataset as a DataFrame, in session order.

    Reads exactly the parts the manifest lists (whatever else the folder holds).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    manifest = manifest or read_manifest(root)
    schema = SESSIONS_SCHEMA if table == "sessions" else EVENTS_SCHEMA
    tables = []
    for part in manifest["parts"]:
        with (root / table / part["name"]).open("rb") as f:
            tables.append(pq.read_table(f, schema=schema))
    arrow = pa.concat_tables(tables) if tables else schema.empty_table()
    return arrow.to_pandas()


def to_api_sessions(sessions: pd.DataFrame, events: pd.DataFrame) -> list[dict[str, Any]]:
    """Rebuild the ``GET /batch/sessions`` session objects from the two tables (JSON text parsed back)."""
    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in events.sort_values(["session_number", "event_index"]).to_dict("records"):
        by_session.setdefault(e["session_id"], []).append({
            "event_id": e["event_id"], "object_id": e["object_id"], "event_type": e["event_type"],
            "created_at": int(e["created_at"]), "meta": _unjson(e["meta"])})
    out = []
    for s in sessions.sort_values("session_number").to_dict("records"):
        results = s["search_results"]
        out.append({
            "session_number": int(s["session_number"]),
            "session_id": s["session_id"],
            "search_query": _py(s["search_query"]),
            "search_results": [{"object_id": r["object_id"], "rank": _py(r["rank"]),
                                "meta": _unjson(r["meta"])}
                               for r in (list(results) if results is not None else [])],
            "search_meta": _unjson(s["search_meta"]),
            "payload_filter": _unjson(s["payload_filter"]),
            "sort_by": _py(s["sort_by"]),
            "user_id": _py(s["user_id"]),
            "created_at": int(s["created_at"]),
            "is_irrelevant": bool(s["is_irrelevant"]),
            "events": by_session.get(s["session_id"], []),
        })
    return out
