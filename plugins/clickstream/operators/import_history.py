"""ImportHistoryOperator: import of clickstream history files into the session store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from clickstream.history import DEFAULT_CHUNK_ROWS, DEFAULT_INVALID_THRESHOLD, DEFAULT_MAX_ERRORS
from clickstream.operators.base import ClickstreamBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.history import ImportReport
    from clickstream.operators.lineage import Lineage


class ImportHistoryOperator(ClickstreamBaseOperator):
    """Import session and event files (JSON Lines or Parquet) into the session store, all or nothing.

    Files are read through :class:`~airflow.sdk.ObjectStoragePath`, so ``path`` may be local
    (``/data/history/``, ``file:///...``) or remote (``s3://aws_default@bucket/history/``). New sessions go
    to the collecting batch. Idempotent under retries: a re-run of the same files loads nothing new.

    The report (see :class:`clickstream.history.ImportReport`) is the task's return value (XCom). The
    task fails without retry when the import was refused (too many invalid rows) and ``fail_on_rejected``
    is set, or when an option or the path is invalid. The listed invalid rows are in the task log either
    way, folded into one group (``::group::``) that the Airflow UI opens on a click.

    :param path: a file, or a folder whose ``.jsonl``/``.ndjson``(``.gz``) or ``.parquet`` files are imported.
    :param format: ``jsonl`` or ``parquet``.
    :param invalid_threshold: largest share of invalid rows (0..1) that still loads the valid rows.
    :param max_errors: at most this many invalid rows are listed (all are counted).
    :param chunk_rows: rows read, validated and loaded at a time (bounds memory).
    :param fail_on_rejected: fail the task when nothing was loaded because of the threshold.
    :param clickstream_conn_id: the session store's Airflow Connection (templated).
    """

    template_fields: Sequence[str] = (
        "path",
        "format",
        "invalid_threshold",
        "max_errors",
        *ClickstreamBaseOperator.template_fields,
    )
    ui_color = "#d9ecff"

    def __init__(
        self,
        *,
        path: str,
        format: str = "jsonl",
        invalid_threshold: float | str = DEFAULT_INVALID_THRESHOLD,
        max_errors: int | str = DEFAULT_MAX_ERRORS,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        fail_on_rejected: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.format = format
        self.invalid_threshold = invalid_threshold
        self.max_errors = max_errors
        self.chunk_rows = chunk_rows
        self.fail_on_rejected = fail_on_rejected
        self.report: ImportReport | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            threshold, max_errors = float(self.invalid_threshold), int(self.max_errors)
        except (TypeError, ValueError) as err:
            raise self.invalid("invalid_threshold / max_errors", f"must be numbers: {err}") from None
        self.log.info(
            "importing %s (%s) into connection %r; invalid threshold %.2f%%, listing up to %d errors",
            self.path,
            self.format,
            self.clickstream_conn_id,
            100 * threshold,
            max_errors,
        )
        with self.store() as hook:  # bad options or path: InvalidInput, a retry cannot help
            report = hook.import_history(
                str(self.path), str(self.format), threshold, max_errors, self.chunk_rows, logger=self.log
            )
        self.report = report
        if report.errors:
            self.log.warning("%d invalid row(s) listed below (%d invalid in all)", len(report.errors), report.invalid)
            self.log.info(f"::group::Invalid rows ({len(report.errors)} listed of {report.invalid})")
            for error in report.errors:
                self.log.warning("invalid row: %s line %d: %s", error.file, error.line, error.reason)
            if report.errors_truncated:
                self.log.warning(
                    "... %d more invalid rows not listed (max_errors=%d)",
                    report.invalid - len(report.errors),
                    max_errors,
                )
            self.log.info("::endgroup::")
        self.log.info(
            "import report: %d rows, %d new sessions%s, %d new events, %d duplicates, %d invalid; loaded=%s",
            report.rows,
            report.loaded_sessions,
            f" (batch {report.batch_id})" if report.batch_id else "",
            report.loaded_events,
            report.duplicates,
            report.invalid,
            report.loaded,
        )
        if not report.loaded and self.fail_on_rejected:
            raise AirflowFailException(
                f"import refused, nothing loaded: {report.invalid} of {report.rows} rows invalid "
                f"({report.invalid_share:.2%} > threshold {threshold:.2%}); the invalid rows are listed above"
            )
        return report.model_dump(mode="json")

    def lineage(self) -> Lineage:
        """Reads the history files (``path``); writes sessions and events (into the collecting batch)."""
        from clickstream.operators.lineage import BATCHES, EVENTS, SESSIONS, Lineage, Location, Table

        report = self.report
        if report is None:
            return Lineage(inputs=[Location(str(self.path))], outputs=[Table(SESSIONS), Table(EVENTS)])
        return Lineage(
            inputs=[Location(str(self.path), rows=report.rows, files=len(report.files))],
            outputs=[
                Table(BATCHES),
                Table(SESSIONS, rows=report.loaded_sessions),
                Table(EVENTS, rows=report.loaded_events),
            ],
            run={
                "batch_id": report.batch_id,
                "loaded": report.loaded,
                "rows": report.rows,
                "loaded_sessions": report.loaded_sessions,
                "loaded_events": report.loaded_events,
                "duplicates": report.duplicates,
                "invalid": report.invalid,
            },
        )
