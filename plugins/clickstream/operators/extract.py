"""ExtractBatchOperator: write a released batch as a Parquet dataset, shard by shard, retry-safe.

Also the two helpers a sharded extraction needs around the mapped operator: :func:`plan_shards` (split a
batch's ``session_number`` range into shards) and :func:`write_dataset_manifest` (combine the shards'
results into the manifest, written last). The dataset layout is described in :mod:`clickstream.dataset`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import DEFAULT_CONN_ID, ClickstreamBaseOperator, InvalidTaskInput
from clickstream.operators.links import BatchLink, DatasetLink

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from clickstream.dataset import ShardWriter
    from clickstream.hooks import ClickstreamHook
    from clickstream.models import BatchInfo
    from clickstream.operators.lineage import Lineage
    from clickstream.progress import Progress

#: URI of the Airflow Asset updated each time a released batch's dataset is complete.
RELEASED_DATASET_URI = "clickstream://datasets/released-batches"


def default_base_path() -> str:
    """``[clickstream] dataset_base_path`` (env ``AIRFLOW__CLICKSTREAM__DATASET_BASE_PATH``), else
    ``file://$AIRFLOW_HOME/clickstream/datasets``."""
    from airflow.sdk import conf

    configured = conf.get("clickstream", "dataset_base_path", fallback="") or ""
    if configured.strip():
        return configured.strip()
    home = os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")
    return f"file://{os.path.abspath(home)}/clickstream/datasets"


def normalize_base_path(base_path: str | None) -> str:
    """A base path as a URI: empty means :func:`default_base_path`; a plain path becomes ``file://``."""
    base = (base_path or "").strip() or default_base_path()
    if "://" not in base:
        base = f"file://{os.path.abspath(os.path.expanduser(base))}"
    return base.rstrip("/")


def dataset_root(base_path: str | None, batch_id: str) -> ObjectStoragePath:
    """``<base_path>/<batch_id>`` as an :class:`~airflow.sdk.ObjectStoragePath`.

    :raises InvalidTaskInput: (a ``ValueError``) naming ``batch_id`` when it is empty or could escape the base
        path; the task fails without retry.
    """
    from airflow.sdk import ObjectStoragePath

    if not isinstance(batch_id, str) or not batch_id.strip() or "/" in batch_id or batch_id in (".", ".."):
        raise InvalidTaskInput(f"batch_id: expected a batch id (no '/'), got {batch_id!r}")
    return ObjectStoragePath(normalize_base_path(base_path)) / batch_id


def dataset_manifest(base_path: str | None, batch_id: str) -> str:
    """Where the manifest of ``batch_id``'s dataset is (path or URI): the tasks' "Dataset" link."""
    from clickstream.dataset import MANIFEST

    return str(dataset_root(base_path, batch_id) / MANIFEST)


def _require_released(hook: ClickstreamHook, batch_id: str) -> BatchInfo:
    """The batch's info; an unknown or collecting batch fails the task without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from clickstream.operators.base import fail_without_retry

    with fail_without_retry():
        info = hook.get_batch(batch_id)
    if info.status != "released":
        raise AirflowFailException(f"batch_id {batch_id!r} is still collecting: release it before extracting it")
    return info


def shard_size(info: BatchInfo, after_number: int, until_number: int | None) -> int:
    """Sessions of a released batch in the shard ``(after_number, until_number]``: exact for the whole
    batch; for a part of it, estimated from the share of the batch's ``session_number`` range it covers."""
    if not info.sessions or info.min_number is None or info.max_number is None:
        return 0
    low = max(after_number + 1, info.min_number)
    high = info.max_number if until_number is None else min(until_number, info.max_number)
    if high < low:
        return 0
    if (low, high) == (info.min_number, info.max_number):
        return info.sessions
    return max(1, round(info.sessions * (high - low + 1) / (info.max_number - info.min_number + 1)))


def plan_shards(
    batch_id: str, shards: int, *, clickstream_conn_id: str = DEFAULT_CONN_ID, base_path: str | None = None
) -> list[dict[str, Any]]:
    """Split a released batch into at most ``shards`` ranges of ``session_number`` for mapped extraction.

    The ranges ``(after_number, until_number]`` are contiguous and cover every number (the first starts at
    0, the last has no upper bound), so every part file of an earlier run is owned by one shard and
    replaced. Empty ranges are dropped. The batch's old manifest, if any, is removed first: the dataset is
    incomplete until :func:`write_dataset_manifest` runs.

    :param batch_id: a released batch.
    :param shards: how many shards at most (>= 1).
    :returns: ``[{"batch_id", "after_number", "until_number"}, ...]``, ready for ``expand_kwargs``.
    """
    from clickstream.dataset import remove_manifest
    from clickstream.hooks import ClickstreamHook

    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise InvalidTaskInput(f"shards: expected an integer >= 1, got {shards!r}")
    with ClickstreamHook(clickstream_conn_id) as hook:
        info = _require_released(hook, batch_id)
    remove_manifest(dataset_root(base_path, batch_id))
    if not info.sessions or info.min_number is None or info.max_number is None:
        return [{"batch_id": batch_id, "after_number": 0, "until_number": None}]
    low, high = info.min_number - 1, info.max_number
    step = max(1, math.ceil((high - low) / shards))
    cuts = sorted({min(low + step * k, high) for k in range(1, shards)} - {high})
    bounds = [0, *cuts, None]
    return [{"batch_id": batch_id, "after_number": a, "until_number": u} for a, u in pairwise(bounds)]


def write_dataset_manifest(
    batch_id: str,
    shard_results: Sequence[dict[str, Any]],
    *,
    clickstream_conn_id: str = DEFAULT_CONN_ID,
    base_path: str | None = None,
    logger: Any = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the manifest of a sharded extraction (last step); returns the small summary for XCom.

    When the shards cover the whole batch, checks that their session counts add up to the batch's; removes
    part files no shard wrote; records the release and ``complete`` (whole batch or not) in the manifest,
    and the manifest's path as the batch's dataset in the store (``record_dataset``). ``labels``: the labels
    task's result (:class:`~clickstream.operators.labels.BatchLabelsOperator`), listed in the manifest.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from clickstream.dataset import manifest_summary, write_manifest
    from clickstream.hooks import ClickstreamHook
    from clickstream.operators.base import fail_without_retry

    with ClickstreamHook(clickstream_conn_id) as hook:
        info = _require_released(hook, batch_id)
    results = sorted(shard_results, key=lambda r: r["after_number"])
    sessions = sum(r["sessions"] for r in results)
    whole = (
        bool(results)
        and results[0]["after_number"] == 0
        and results[-1]["until_number"] is None
        and all(a["until_number"] == b["after_number"] for a, b in pairwise(results))
    )
    if whole and info.sessions is not None and sessions != info.sessions:
        raise AirflowFailException(
            f"batch_id {batch_id!r}: the shards wrote {sessions} sessions but the batch "
            f"has {info.sessions}; clear the extraction to rewrite it"
        )
    manifest = write_manifest(
        dataset_root(base_path, batch_id),
        batch_id,
        results,
        logger=logger,
        extra={"release_id": info.release_id, "released_at": info.released_at, "complete": whole},
        labels={k: v for k, v in labels.items() if k != "batch_id"} if labels else None,
    )
    summary = manifest_summary(manifest)
    with ClickstreamHook(clickstream_conn_id) as hook, fail_without_retry():
        hook.record_dataset(batch_id, summary["paths"]["manifest"])  # the batch's `dataset` in the REST API
    return {**summary, "release_id": info.release_id, "released_at": info.released_at}


class ExtractBatchOperator(ClickstreamBaseOperator):
    """Write a released batch (or one shard of it) as Parquet under ``<base_path>/<batch_id>/``.

    Pages through the batch with ``iter_extract_pages`` (``page_size`` sessions with all their events at a
    time; on PostgreSQL as Arrow columns read through ADBC, else as JSON lines in the dataset's layout that
    Arrow parses directly) and writes each page as a row
    group, ``pages_per_part`` pages per part file, so memory is bounded by one page whatever the batch's
    size. Part files are named after their first ``session_number``; a run first deletes the parts its range
    owns, so a retry after a failure half-way ends with exactly the batch's rows, none twice, none missing.
    Logs its progress (sessions done / the shard's sessions, percentage, rate, time left) at most every
    ``progress_interval_s`` seconds, and pages, rows and rate.

    With ``write_manifest=True`` (default) this task is the whole extraction: it removes an old manifest,
    writes its range, then writes ``_manifest.json`` last and returns a summary
    ``{batch_id, sessions, events, parts, shards, paths, release_id, released_at}``. For a sharded
    extraction, map it over :func:`plan_shards` with ``write_manifest=False`` (each shard returns its
    range, counts and part list) and finish with :func:`write_dataset_manifest`.

    An unknown or still collecting batch, and bad numbers, fail the task without retry.

    :param batch_id: a released batch (templated).
    :param base_path: where datasets go (templated): any ``ObjectStoragePath`` URI (``file://``,
        ``s3://conn_id@bucket/prefix`` ...) or a local path; default ``[clickstream] dataset_base_path``,
        else ``file://$AIRFLOW_HOME/clickstream/datasets``.
    :param after_number: shard lower bound, exclusive (templated); default 0.
    :param until_number: shard upper bound, inclusive (templated); default None (no bound).
    :param page_size: sessions per page read from the store (templated; default 1000).
    :param pages_per_part: pages per part file (templated; default 10).
    :param write_manifest: write the manifest at the end (default True; False for mapped shards).
    :param progress_interval_s: seconds between two progress lines at least (default 5).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = (
        "batch_id",
        "base_path",
        "after_number",
        "until_number",
        "page_size",
        "pages_per_part",
        *ClickstreamBaseOperator.template_fields,
    )
    ui_color = "#eae4f7"
    #: "Batch" (the batch on the Clickstream page) and "Dataset" (:mod:`clickstream.operators.links`).
    operator_extra_links = (BatchLink(), DatasetLink())

    def __init__(
        self,
        *,
        batch_id: str,
        base_path: str | None = None,
        after_number: int | str = 0,
        until_number: int | str | None = None,
        page_size: int | str = 1000,
        pages_per_part: int | str = 10,
        write_manifest: bool = True,
        progress_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.base_path = base_path
        self.after_number = after_number
        self.until_number = until_number
        self.page_size = page_size
        self.pages_per_part = pages_per_part
        self.write_manifest = write_manifest
        self.progress_interval_s = progress_interval_s
        self.progress: Progress | None = None
        self.result: dict[str, Any] | None = None

    def make_writer(self, root: ObjectStoragePath, after: int, until: int | None) -> ShardWriter:
        """The writer of this run (override to observe pages, e.g. to simulate a crash in tests). The default
        one reports each written page to :meth:`report_progress`."""
        from clickstream.dataset import ShardWriter

        operator = self

        class ProgressWriter(ShardWriter):
            def on_page(self, pages_done: int, sessions: int, events: int) -> None:
                operator.report_progress(sessions)

        return ProgressWriter(
            root,
            self.batch_id,
            after_number=after,
            until_number=until,
            pages_per_part=_as_int("pages_per_part", self.pages_per_part, default=10, minimum=1),
            logger=self.log,
        )

    def report_progress(self, sessions: int) -> None:
        """``sessions`` of this shard are written: log the progress line when it is due."""
        if self.progress is not None:
            self.progress.update(sessions)

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.dataset import remove_manifest
        from clickstream.progress import Progress

        after = _as_int("after_number", self.after_number, default=0)
        until = _as_optional_int("until_number", self.until_number)
        page_size = _as_int("page_size", self.page_size, default=1000, minimum=1)
        if after < 0 or (until is not None and until < after):
            raise self.invalid(
                "after_number/until_number", f"need 0 <= after_number <= until_number, got ({after}, {until}]"
            )
        root = dataset_root(self.base_path, self.batch_id)
        with self.store() as hook:
            info = _require_released(hook, self.batch_id)
            if self.write_manifest:
                remove_manifest(root)
            total = shard_size(info, after, until)
            self.log.info(
                "Extracting batch %s, sessions (%s, %s] (%s%d of its %d sessions), to %s (page size %d)",
                self.batch_id,
                after,
                until,
                "" if (after, until) == (0, None) else "about ",
                total,
                info.sessions or 0,
                root,
                page_size,
            )
            self.progress = Progress(
                self.log,
                f"extract batch {self.batch_id} ({after}, {until}]",
                total,
                "sessions",
                interval_s=self.progress_interval_s,
            )
            pages = hook.iter_extract_pages(
                self.batch_id, page_size=page_size, after_number=after, until_number=until, columns=True
            )
            result = self.make_writer(root, after, until).write(pages)
        result = {"batch_id": self.batch_id, **result}
        self.result = result
        if not self.write_manifest:
            return result
        self.result = write_dataset_manifest(
            self.batch_id,
            [result],
            clickstream_conn_id=self.clickstream_conn_id,
            base_path=self.base_path,
            logger=self.log,
        )
        return self.result

    def dataset_manifest(self) -> str:
        """The dataset's manifest, written by this task or (a shard) by the extraction's last step: the
        "Dataset" link."""
        return dataset_manifest(self.base_path, self.batch_id)

    def lineage(self) -> Lineage:
        """Reads the batch's sessions and events from the store; writes the dataset root."""
        from clickstream.operators.lineage import BATCHES, EVENTS, SESSIONS, Lineage, Location, Table

        result = self.result or {}
        parts = result.get("parts")
        n_parts = parts if isinstance(parts, int) else len(parts) if isinstance(parts, list) else None
        run: dict[str, Any] = {k: result[k] for k in ("after_number", "until_number", "release_id") if k in result}
        return Lineage(
            inputs=[
                Table(BATCHES),
                Table(SESSIONS, rows=result.get("sessions")),
                Table(EVENTS, rows=result.get("events")),
            ],
            outputs=[
                Location(
                    str(dataset_root(self.base_path, self.batch_id)),
                    rows=result.get("sessions"),
                    files=None if n_parts is None else 2 * n_parts,
                )
            ],
            run={
                "batch_id": self.batch_id,
                **run,
                **{k: result[k] for k in ("sessions", "events") if k in result},
                **({"parts": n_parts} if n_parts is not None else {}),
            },
        )


def _as_int(field: str, value: Any, *, default: int, minimum: int | None = None) -> int:
    """Templated numbers arrive as strings; '' and 'None' mean the default."""
    number = _as_optional_int(field, value, minimum=minimum)
    return default if number is None else number


def _as_optional_int(field: str, value: Any, *, minimum: int | None = None) -> int | None:
    """As :func:`_as_int`, with None (no value) as the default."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidTaskInput(f"{field}: expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise InvalidTaskInput(f"{field}: must be >= {minimum}, got {number}")
    return number
