"""Writing one shard of a batch as part files, and the part files a dataset root holds.

A shard ``(after_number, until_number]`` owns exactly the parts whose first session number falls in its
range: a (re)run of a shard first deletes those (:func:`clear_shard`), then writes its parts again, so a
retry after a failure half-way ends with exactly the batch's rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from clickstream.dataset.pages import extract_page_tables, prefetched
from clickstream.dataset.schema import EVENTS_SCHEMA, SESSIONS_SCHEMA, TABLES, part_name, part_number

if TYPE_CHECKING:
    from clickstream.store.rows import ExtractPage

log = logging.getLogger(__name__)


@dataclass
class PartInfo:
    """One part: a file in ``sessions/`` and its namesake in ``events/``."""

    name: str
    first_number: int
    last_number: int
    sessions: int
    events: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "first_number": self.first_number,
            "last_number": self.last_number,
            "sessions": self.sessions,
            "events": self.events,
        }


def _in_shard(number: int, after: int, until: int | None) -> bool:
    return number > after and (until is None or number <= until)


def list_parts(root: Any) -> dict[str, list[Any]]:
    """The part files present under a dataset root, per table (missing folders count as empty).

    :param root: the dataset root ``<base_path>/<batch_id>``.
    """
    found: dict[str, list[Any]] = {}
    for table in TABLES:
        folder = root / table
        found[table] = (
            sorted((p for p in folder.iterdir() if part_number(p.name) is not None), key=lambda p: p.name)
            if folder.exists()
            else []
        )
    return found


def clear_shard(root: Any, after_number: int, until_number: int | None) -> int:
    """Delete the parts a shard ``(after_number, until_number]`` owns (from an earlier, failed attempt).

    :param root: the dataset root ``<base_path>/<batch_id>``.
    :param after_number: the shard's lower bound (exclusive).
    :param until_number: the shard's upper bound (inclusive); None: no bound.
    :return: how many files were deleted.
    """
    removed = 0
    for paths in list_parts(root).values():
        for path in paths:
            number = part_number(path.name)
            if number is not None and _in_shard(number, after_number, until_number):
                path.unlink()
                removed += 1
    return removed


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

    def __init__(
        self,
        root: Any,
        batch_id: str,
        *,
        after_number: int = 0,
        until_number: int | None = None,
        pages_per_part: int = 10,
        logger: logging.Logger | Any | None = None,
    ):
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
            self.log.info(
                "removed %d part file(s) of an earlier attempt of shard (%s, %s]",
                removed,
                self.after_number,
                self.until_number,
            )
        for table in TABLES:
            (self.root / table).mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        parts: list[PartInfo] = []
        pages_done = sessions = events = 0
        writers: tuple[Any, ...] | None = None
        current: PartInfo | None = None
        try:
            for page in prefetched(pages):  # the next page is read while this one is written
                if not page:
                    continue
                s_table, e_table = extract_page_tables(page)
                first_number, last_number = page.first_number, page.last_number
                if writers is None or current is None:  # both None, or both set: the part being written
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
                    parts.append(current)
                    writers = current = None
                elapsed = max(time.monotonic() - started, 1e-9)
                self.log.debug(
                    "shard (%s, %s]: page %d written, %d sessions, %d events so far (%.0f sessions/s)",
                    self.after_number,
                    self.until_number,
                    pages_done,
                    sessions,
                    events,
                    sessions / elapsed,
                )
                self.on_page(pages_done, sessions, events)
            if writers is not None and current is not None:
                self._close(writers)
                writers = None
                parts.append(current)
        finally:
            if writers is not None:  # failing half-way: close what is open; the retry deletes it
                self._close(writers, quiet=True)
        elapsed = time.monotonic() - started
        self.log.info(
            "shard (%s, %s] done: %d pages, %d sessions, %d events in %d part(s), %.1f s (%.0f rows/s)",
            self.after_number,
            self.until_number,
            pages_done,
            sessions,
            events,
            len(parts),
            elapsed,
            (sessions + events) / max(elapsed, 1e-9),
        )
        return {
            "after_number": self.after_number,
            "until_number": self.until_number,
            "sessions": sessions,
            "events": events,
            "pages": pages_done,
            "parts": [p.as_dict() for p in parts],
        }

    def _open(self, name: str) -> tuple[Any, ...]:
        s_file = (self.root / "sessions" / name).open("wb")
        e_file = (self.root / "events" / name).open("wb")
        return (
            s_file,
            pq.ParquetWriter(s_file, SESSIONS_SCHEMA, compression="zstd"),
            e_file,
            pq.ParquetWriter(e_file, EVENTS_SCHEMA, compression="zstd"),
        )

    @staticmethod
    def _close(writers: tuple[Any, ...], quiet: bool = False) -> None:
        for obj in (writers[1], writers[0], writers[3], writers[2]):
            try:
                obj.close()
            except Exception:  # only when already failing
                if not quiet:
                    raise
