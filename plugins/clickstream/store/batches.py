"""The batch lifecycle: open the collecting batch, page through a batch, release it, read and list batch rows,
record a released batch's dataset.

What a batch's sessions say (its metrics) is in :mod:`~clickstream.store.metrics`; the Clickstream page's
view of batches (counts, kept metrics, dataset) in :mod:`~clickstream.store.overview`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import Connection, RowMapping, exc

from clickstream import models
from clickstream.models import MAX_BIGINT
from clickstream.store.base import StoreBase
from clickstream.store.checks import optional_text, validate

# The page's limits moved to clickstream.store.config; re-exported here only while the REST routes and the UI
# still import them from this module (remove once they import them from config).
from clickstream.store.db import ArrowReader, Database
from clickstream.store.errors import Conflict, InvalidInput, NotFound
from clickstream.store.rows import ExtractPage, new_batch_id, page_json, session_dict

P = TypeVar("P", ExtractPage, list[dict[str, Any]])

#: The page model's serialiser, as FastAPI writes a ``response_model`` (the non-PostgreSQL JSON page).
PAGE_JSON = TypeAdapter(models.BatchSessionsPage)

#: Connections that read extraction pages at once on PostgreSQL (:meth:`BatchOperations.iter_extract_pages`).
EXTRACT_READERS = 2


def require_batch(db: Database, conn: Connection, batch_id: str) -> RowMapping:
    """The batch row of ``batch_id``; :class:`NotFound` if there is none."""
    row = db.run(conn, "get_batch", batch_id=batch_id).mappings().first()
    if row is None:
        raise NotFound(f"batch_id {batch_id!r} not found")
    return row


def open_collecting_batch(db: Database, conn: Connection, clock: Callable[[], int]) -> None:
    """Insert a collecting batch (a no-op when a concurrent transaction just did).

    Openers take turns (``lock_batch_creation``); the creation time is read after that, and is later than
    every existing batch's, so batch ids, which start with it, sort by creation even for batches opened
    within one millisecond or by a registration that waited on a release. Live registration, ``ingest_bulk``
    and the history import all open batches here.
    """
    if db.has("lock_batch_creation"):  # PostgreSQL; SQLite holds its write lock already
        db.run(conn, "lock_batch_creation")
    latest = db.run(conn, "latest_batch_created_at").scalar()
    created = max(clock(), (latest or 0) + 1)
    db.run(conn, "insert_collecting_batch", batch_id=new_batch_id(created), now=created)


class BatchOperations(StoreBase):
    def get_batch_sessions(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> models.BatchSessionsPage:
        """One keyset page of a batch: sessions numbered above ``after_number``, ascending."""
        self.checks.page_bounds(after_number, limit, events_limit)
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
            sessions = self._page(conn, batch_id, after_number, MAX_BIGINT, limit, events_limit)
        return models.BatchSessionsPage(
            batch_id=batch_id, last_number=sessions[-1]["session_number"] if sessions else None, sessions=sessions
        )  # dicts, validated into the page model here

    def get_batch_sessions_json(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> bytes:
        """:meth:`get_batch_sessions`'s page as the JSON document ``GET /batch/sessions`` answers (UTF-8): the
        same keys in the same order, the same values once parsed, the same errors.

        On PostgreSQL the database builds the sessions' JSON (``batch_page_json``) in one statement, read as text
        and re-encoded in C (:func:`~clickstream.store.rows.page_json`): no Python object per free-form value.
        Elsewhere it is the page model, serialised.
        """
        self.checks.page_bounds(after_number, limit, events_limit)
        if not self.db.has("batch_page_json"):
            page = self.get_batch_sessions(batch_id, after_number, limit, events_limit)
            return PAGE_JSON.dump_json(page, by_alias=True)
        with self.db.transaction(write=False, single_statement=True) as conn:
            row = self.db.run(
                conn,
                "batch_page_json",
                batch_id=batch_id,
                after_number=after_number,
                until_number=MAX_BIGINT,
                limit=limit,
                events_limit=events_limit,
            ).one_or_none()
        if row is None:
            raise NotFound(f"batch_id {batch_id!r} not found")
        return page_json(batch_id, row.last_number, row.sessions)

    def _page(
        self, conn: Connection, batch_id: str, after: int, until: int, limit: int, events_limit: int
    ) -> list[dict[str, Any]]:
        rows = self.db.run(
            conn,
            "batch_page",
            batch_id=batch_id,
            after_number=after,
            until_number=until,
            limit=limit,
            events_limit=events_limit,
        ).mappings()
        return [session_dict(r) for r in rows]

    def iter_batch_pages(
        self, batch_id: str, *, page_size: int = 1000, after_number: int = 0, until_number: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Every session of a batch with its events (at most ``max_events_per_session`` each), page by page,
        as plain dicts.

        Memory is bounded by ``page_size``; each page is its own short read, so a long extraction holds no
        transaction open. ``after_number`` / ``until_number`` select a shard ``(after, until]``.
        """

        def read(conn: Connection, after: int, until: int) -> list[dict[str, Any]]:
            return self._page(conn, batch_id, after, until, page_size, self.config.max_events_per_session)

        return self._keyset_pages(
            batch_id, page_size, after_number, until_number, read, lambda page: page[-1]["session_number"]
        )

    def iter_extract_pages(
        self,
        batch_id: str,
        *,
        page_size: int = 1000,
        after_number: int = 0,
        until_number: int | None = None,
        columns: bool = False,
    ) -> Iterator[ExtractPage]:
        """Like :meth:`iter_batch_pages`, in the dataset's flat layout (:class:`ExtractPage`), built by the
        database in one statement a page (``extract_page``). Memory is bounded by ``page_size``.

        :param columns: pages as Arrow columns (``ExtractPage.columns``, ``extract_page_arrow``) where the
            store can read them so (PostgreSQL with ADBC), else as JSON lines; the same rows either way
            (``clickstream.dataset.extract_page_tables`` reads both).
        """

        def read(conn: Connection, after: int, until: int) -> ExtractPage:
            row = (
                self.db.run(
                    conn,
                    "extract_page",
                    batch_id=batch_id,
                    after_number=after,
                    until_number=until,
                    limit=page_size,
                    max_events=self.config.max_events_per_session,
                )
                .mappings()
                .one()
            )
            return ExtractPage(
                row["first_number"],
                row["last_number"],
                row["sessions"],
                row["events"],
                (row["sessions_json"] or "").encode(),
                (row["events_json"] or "").encode(),
            )

        def read_columns(arrow: ArrowReader, after: int, until: int) -> ExtractPage:
            import pyarrow.compute as pc  # only here: most of the store's users never read columns

            table = arrow.table(
                "extract_page_arrow",
                batch_id=batch_id,
                after_number=after,
                until_number=until,
                limit=page_size,
                max_events=self.config.max_events_per_session,
            )
            if not table.num_rows:
                return ExtractPage(None, None, 0, 0, columns=table)  # type: ignore[arg-type]
            numbers = table.column("session_number")
            events = pc.sum(pc.list_value_length(table.column("event_id"))).as_py() or 0
            return ExtractPage(numbers[0].as_py(), numbers[-1].as_py(), table.num_rows, events, columns=table)

        if not self.db.has("extract_page_bounds"):
            return self._keyset_pages(
                batch_id, page_size, after_number, until_number, read, lambda page: page.last_number
            )
        return self._parallel_pages(
            batch_id, page_size, after_number, until_number, read, read_columns if columns else None
        )

    def _parallel_pages(
        self,
        batch_id: str,
        page_size: int,
        after_number: int,
        until_number: int | None,
        read: Callable[[Connection, int, int], ExtractPage],
        read_columns: Callable[[ArrowReader, int, int], ExtractPage] | None,
    ) -> Iterator[ExtractPage]:
        """:meth:`iter_extract_pages` on PostgreSQL: the same pages as the keyset loop, read by
        :data:`EXTRACT_READERS` connections at once (building a page is the database's work, one core each;
        COPY of the joining query is one backend). One index-only query first finds the pages' bounds (every
        ``page_size``-th session number); each page is still one statement reading ``(after, until]`` with its
        limit, and pages are yielded in order. Sessions beyond the bounds (a batch still collecting) are read by
        the keyset loop after the last page. Memory: :data:`EXTRACT_READERS` pages in flight.

        Given ``read_columns``, the pages are read as Arrow columns (``extract_page_arrow`` through
        :meth:`Database.arrow_reader`: no JSON built by the database nor parsed by the client) when ADBC is
        there and connects, else as JSON lines (``read``, ``extract_page``)."""
        if page_size < 1:
            raise InvalidInput.field("page_size", f"must be >= 1, got {page_size}")
        until = MAX_BIGINT if until_number is None else until_number
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
            bounds = list(
                self.db.run(
                    conn,
                    "extract_page_bounds",
                    batch_id=batch_id,
                    after_number=after_number,
                    until_number=until,
                    page_size=page_size,
                ).scalars()
            )
        ranges = list(zip([after_number, *bounds], [*bounds, until], strict=True))

        def pages() -> Iterator[ExtractPage]:
            last: ExtractPage | None = None
            arrow = self.db.arrow_reader() if read_columns is not None else None

            def read_range(after: int, upper: int) -> ExtractPage:
                if arrow is not None and read_columns is not None:
                    return read_columns(arrow, after, upper)
                with self.db.transaction(write=False) as conn:
                    return read(conn, after, upper)

            pool = ThreadPoolExecutor(EXTRACT_READERS, thread_name_prefix="clickstream-extract-read")
            try:
                pending = iter(ranges)
                inflight = deque(pool.submit(read_range, *r) for r in islice(pending, EXTRACT_READERS))
                while inflight:
                    last = inflight.popleft().result()
                    nxt = next(pending, None)
                    if nxt is not None:
                        inflight.append(pool.submit(read_range, *nxt))
                    if len(last):
                        yield last
                if last is not None and len(last) == page_size:  # the batch grew past the bounds: keyset from here
                    yield from self._keyset_pages(
                        batch_id,
                        page_size,
                        last.last_number,
                        until_number,
                        lambda conn, after, upper: (
                            read(conn, after, upper)
                            if arrow is None or read_columns is None
                            else read_columns(arrow, after, upper)
                        ),
                        lambda page: page.last_number,
                    )
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                if arrow is not None:
                    arrow.close()

        return pages()

    def _keyset_pages(
        self,
        batch_id: str,
        page_size: int,
        after_number: int,
        until_number: int | None,
        read: Callable[[Connection, int, int], P],
        last_number: Callable[[P], int],
    ) -> Iterator[P]:
        """The keyset loop of the page iterators: each page is its own short read; a short page is the last."""
        if page_size < 1:
            raise InvalidInput.field("page_size", f"must be >= 1, got {page_size}")
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
        until = MAX_BIGINT if until_number is None else until_number

        def pages() -> Iterator[P]:
            after = after_number
            while True:
                with self.db.transaction(write=False) as conn:
                    page = read(conn, after, until)
                if not len(page):
                    return
                yield page
                if len(page) < page_size:
                    return
                after = last_number(page)

        return pages()

    def release_batch(self, release_id: str) -> models.ReleaseResult:
        """Release the collecting batch under ``release_id`` (an idempotency key).

        A ``release_id`` seen before answers its original result, even if another batch is collecting by
        now. No collecting batch and an unknown ``release_id``: :class:`NotFound`. Cost does not depend on
        the batch's size.
        """
        rid = validate(models.ReleaseIn, {"release_id": release_id}).release_id
        db = self.db
        for _ in range(3):
            try:
                with db.transaction(write=True) as conn:
                    row = db.run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None and self._lock_collecting_for_release(conn):
                        row = db.run(conn, "release_collecting", release_id=rid, now=self.clock()).mappings().first()
                    if row is None:
                        # A concurrent retry of this release_id may have released the batch we waited on
                        # (PostgreSQL re-checks the UPDATE after its commit and finds nothing collecting):
                        # a fresh statement sees that commit, so answer its result.
                        row = db.run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None:
                        raise NotFound(f"no collecting batch to release under release_id {rid!r}")
                    return models.ReleaseResult(**row)
            except exc.IntegrityError:
                # A concurrent retry of the same release_id committed first (unique release_id): re-read it.
                continue
        raise Conflict(f"release_id {rid!r} is being released concurrently; retry")

    def _lock_collecting_for_release(self, conn: Connection) -> bool:
        """Wait until no registration holds the collecting batch, and lock it; False when none is collecting.

        Only after this does the release read its clock, so ``released_at`` is never earlier than a member's
        ``registered_at``. A batch that commits after this lock's snapshot is not released by this call.
        First, on PostgreSQL, it waits for history imports in progress (``lock_imports_for_release``), whose
        events take their ``event_seq`` long before they commit: so ``released_event_seq`` is exact for them
        (an imported event is late exactly when the import committed after the release).
        SQLite needs nothing: the transaction already holds the database's write lock.
        """
        if self.db.has("lock_imports_for_release"):
            self.db.run(conn, "lock_imports_for_release")
        if not self.db.has("lock_collecting_for_release"):
            return True
        return self.db.run(conn, "lock_collecting_for_release").first() is not None

    def get_batch(self, batch_id: str) -> models.BatchInfo:
        """The batch's own row: its status, release and the count and range of its session numbers (cheap:
        no metrics, no event counts; the page's view of a batch is :meth:`get_batch_summary`).

        :raises NotFound: unknown ``batch_id``.
        """
        with self.db.transaction(write=False) as conn:
            row = require_batch(self.db, conn, batch_id)
            stats = self.db.run(conn, "batch_number_stats", batch_id=batch_id).mappings().one()
        return models.BatchInfo(**row, **stats)

    def list_batches(self, status: str | None = None, limit: int = 100) -> list[models.BatchInfo]:
        """Batch rows, newest first: at most ``limit``, only those of ``status`` (``collecting`` or
        ``released``) unless it is None; each as :meth:`get_batch` answers it but without the session count
        and number range. The page's keyset-paged list, with counts, metrics and dataset, is
        :meth:`list_batches_page`."""
        if status not in (None, "collecting", "released"):
            raise InvalidInput.field("status", f"must be collecting or released, got {status!r}")
        if limit < 1:
            raise InvalidInput.field("limit", f"must be >= 1, got {limit}")
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, "list_batches", status=status, limit=limit).mappings().all()
        return [models.BatchInfo(**r) for r in rows]

    def record_dataset(self, batch_id: str, manifest_path: str) -> None:
        """Record where the dataset of released batch ``batch_id`` is: its manifest's path or URI (shown as
        ``dataset`` by :meth:`list_batches_page`). Recording again replaces it.

        :raises InvalidInput: an empty ``manifest_path``, or one over 4096 characters.
        :raises NotFound: unknown ``batch_id``.
        :raises Conflict: the batch is still collecting.
        """
        path = optional_text("manifest_path", manifest_path, 4096)
        if path is None:
            raise InvalidInput.field("manifest_path", "must be a path or URI, got None")
        db = self.db
        with db.transaction(write=True) as conn:
            if db.run(conn, "record_dataset", batch_id=batch_id, dataset=path).rowcount == 0:
                require_batch(db, conn, batch_id)
                raise Conflict(f"batch_id {batch_id!r} is collecting: a dataset is written from a released batch")
