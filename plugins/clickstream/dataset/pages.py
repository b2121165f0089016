"""The store's extraction pages as Arrow tables, and reading the next page while this one is written.

A page (:class:`clickstream.store.ExtractPage`, as yielded by ``iter_extract_pages``) carries the dataset's
two tables either as Arrow columns (PostgreSQL with ADBC: one row per session, results and events as
parallel lists), from which the two tables are assembled with Arrow's array functions, or as JSON lines,
which Arrow's JSON reader parses straight into columns. Both give the schemas in
:mod:`clickstream.dataset.schema`, with the same values.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from clickstream.dataset.schema import EVENTS_SCHEMA, SESSIONS_SCHEMA


def extract_page_tables(page: Any) -> tuple[pa.Table, pa.Table]:
    """A store's ``ExtractPage`` (this layout as JSON lines) as a sessions table and an events table.

    Arrow's JSON reader parses the lines straight into columns: no Python object per value.

    :param page: an ``ExtractPage`` (``columns``, or ``sessions_json`` and ``events_json``).
    """
    if page.columns is not None:
        return _from_columns(page.columns)
    return _read_lines(page.sessions_json, SESSIONS_SCHEMA), _read_lines(page.events_json, EVENTS_SCHEMA)


_RESULTS = SESSIONS_SCHEMA.field("search_results").type
_SORT_BY = SESSIONS_SCHEMA.field("sort_by").type


def _from_columns(page: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The two tables of a page read as columns (``ExtractPage.columns``): the nested columns and the events
    table built from the parallel lists by offsets, no Python object per value."""
    if not page.num_rows:
        return SESSIONS_SCHEMA.empty_table(), EVENTS_SCHEMA.empty_table()
    page = page.combine_chunks()

    def col(name: str) -> pa.Array:
        return page.column(name).chunk(0)

    def lists(*names: str) -> tuple[pa.Array, list[pa.Array]]:
        """The offsets (from 0) of parallel lists, and each list's values; the lists must be parallel."""
        first = col(names[0])
        if first.null_count:
            raise ValueError(f"extraction page: {names[0]} has NULL lists")
        lengths = pc.list_value_length(first)
        for name in names[1:]:
            if not pc.list_value_length(col(name)).equals(lengths):
                raise ValueError(f"extraction page: {name} is not parallel to {names[0]}")
        offsets = pc.subtract(first.offsets, first.offsets[0])
        return offsets, [col(name).flatten() for name in names]

    r_offsets, (r_object_id, r_rank, r_meta) = lists("result_object_id", "result_rank", "result_meta")
    results = pa.ListArray.from_arrays(
        r_offsets,
        pa.StructArray.from_arrays([r_object_id, r_rank, r_meta], fields=list(_RESULTS.value_type)),
        type=_RESULTS,
    )
    sort_by = pa.StructArray.from_arrays(
        [col("sort_field"), col("sort_order")], fields=list(_SORT_BY), mask=col("sort_by_null")
    )
    e_offsets, e_values = lists("event_id", "event_object_id", "event_type", "event_created_at", "event_meta")
    n_events = pc.list_value_length(col("event_id"))
    sessions = pa.Table.from_arrays(
        [
            col("batch_id"),
            col("session_number"),
            col("session_id"),
            col("search_query"),
            results,
            col("search_meta"),
            col("payload_filter"),
            sort_by,
            col("user_id"),
            col("created_at"),
            col("is_irrelevant"),
            n_events,
        ],
        schema=SESSIONS_SCHEMA,
    )
    owner = pc.list_parent_indices(col("event_id"))  # each event's row in the page
    starts = _int32s(e_offsets)
    index = np.arange(int(starts[-1]), dtype=np.int32) - np.repeat(starts[:-1], _int32s(n_events))
    event_id, object_id, event_type, created_at, meta = e_values
    events = pa.Table.from_arrays(
        [
            col("batch_id").take(owner),
            col("session_number").take(owner),
            col("session_id").take(owner),
            pa.Array.from_buffers(pa.int32(), len(index), [None, pa.py_buffer(index)]),  # not pa.array: pandas
            event_id,
            object_id,
            event_type,
            created_at,
            meta,
        ],
        schema=EVENTS_SCHEMA,
    )
    return sessions, events


def _int32s(values: pa.Array) -> np.ndarray:
    """An int32 array without NULLs as numpy, from its buffer (``Array.to_numpy`` imports pandas, a second
    of CPU the first time)."""
    return np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values)]


def _read_lines(data: bytes, schema: pa.Schema) -> pa.Table:
    if not data:
        return schema.empty_table()
    table = pa_json.read_json(
        io.BytesIO(data),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
    )
    return table.select(schema.names).cast(schema)


_END = object()


def prefetched(pages: Iterable[Any]) -> Iterator[Any]:
    """Yield ``pages`` while a background thread already reads the next one (at most one ahead).

    Reading a page waits on the database, writing it uses this process's CPU: overlapped, an extraction
    takes about the longer of the two instead of their sum. Memory: one more page. An error while reading
    is raised here; when the consumer stops early (an error while writing), the reader stops too.

    :param pages: the pages, read in the background thread.
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
        except BaseException as err:
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
