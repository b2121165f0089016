"""Airflow operators over :class:`clickstream.hooks.ClickstreamHook`: thin, and idempotent under retries.

Names are imported lazily so that ``import clickstream.operators`` stays cheap for the DAG processor.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClickstreamBaseOperator": "clickstream.operators.base",
    "ReleaseBatchOperator": "clickstream.operators.release",
    "ExtractBatchOperator": "clickstream.operators.extract",
    "MarkForImprovementOperator": "clickstream.operators.mark",
    "BatchMetricsOperator": "clickstream.operators.metrics",
    "BatchLabelsOperator": "clickstream.operators.labels",
    "ImportHistoryOperator": "clickstream.operators.import_history",
    "EraseUserOperator": "clickstream.operators.erasure",
    "PurgeReleasedBatchesOperator": "clickstream.operators.retention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
