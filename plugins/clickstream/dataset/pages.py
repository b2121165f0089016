"""The store's extraction pages as Arrow tables, and reading the next page while this one is written.

A page (:class:`clickstream.store.ExtractPage`, as yielded by ``iter_extract_pages``) carries the dataset's
two tables as JSON lines; Arrow's JSON reader parses them straight into columns of the schemas in
:mod:`clickstream.dataset.schema`.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json

from clickstream.dataset.schema import EVENTS_SCHEMA, SESSIONS_SCHEMA


def extract_page_tables(page: Any) -> tuple[pa.Table, pa.Table]:
    """A store's ``ExtractPage`` (this layout as JSON lines) as a sessions table and an events table.

    Arrow's JSON reader parses the lines straight into columns: no Python object per value.

    :param page: an ``ExtractPage`` (``sessions_json``, ``events_json``).
    """
    return _read_lines(page.sessions_json, SESSIONS_SCHEMA), _read_lines(page.events_json, EVENTS_SCHEMA)


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
