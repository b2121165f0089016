"""OpenLineage for the clickstream operators: what a task read and wrote, as OpenLineage datasets.

An operator describes its lineage with the plain classes below (no OpenLineage import); :func:`to_openlineage`
turns that into the OpenLineage provider's ``OperatorLineage``. The provider is optional
(``pip install 'clickstream[openlineage]'``): it is imported only inside :func:`to_openlineage`, which only
the provider's listener calls.

Naming (OpenLineage's conventions):

* a store table: namespace ``postgres://<host>:<port>`` and name ``<database>.public.<table>`` for
  PostgreSQL; namespace ``sqlite://<file path>`` and name ``main.<table>`` for SQLite;
* a file location (the dataset root ``<base_path>/<batch_id>``, a history file or folder): namespace ``file``
  and the absolute path for local files; ``s3://<bucket>`` (``gs://``, ...) and the key for object storage
  (an ``ObjectStoragePath`` connection id such as ``s3://aws_default@bucket/...`` is not part of the name).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

#: The store's tables (include/sql/migrations).
BATCHES, SESSIONS, EVENTS, MARKS = "cs_batch", "cs_session", "cs_event", "cs_improvement_mark"

#: Key of the run facet that carries the batch id and the counts of a clickstream task.
RUN_FACET = "clickstream"


@dataclass
class Table:
    """A table of the session store; ``rows``: how many rows the task read or wrote, when known."""

    name: str
    rows: int | None = None


@dataclass
class Location:
    """Files outside the store, by URI (``file:///...``, ``s3://...``) or absolute path."""

    uri: str
    rows: int | None = None
    files: int | None = None
    size: int | None = None


@dataclass
class Lineage:
    """What a task read (``inputs``) and wrote (``outputs``), and facts about its run (batch id, counts)."""

    inputs: list[Table | Location] = field(default_factory=list)
    outputs: list[Table | Location] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)


def store_namespace(url: URL) -> tuple[str, str]:
    """``(namespace, name prefix)`` of the store's tables for its SQLAlchemy URL."""
    if url.get_backend_name() == "sqlite":
        path = url.database or ":memory:"
        return f"sqlite://{os.path.abspath(path) if path != ':memory:' else path}", "main"
    return f"postgres://{url.host or 'localhost'}:{url.port or 5432}", f"{url.database or 'postgres'}.public"


def location_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of a file location: ``("file", "/abs/path")`` or ``("s3://bucket", "key")``."""
    if "://" not in uri:
        return "file", os.path.abspath(os.path.expanduser(uri))
    parts = urlsplit(uri)
    if parts.scheme in ("file", "local"):
        return "file", parts.path or "/"
    bucket = parts.netloc.rsplit("@", 1)[-1]  # ObjectStoragePath's s3://conn_id@bucket/key
    return f"{parts.scheme}://{bucket}", parts.path.lstrip("/").rstrip("/") or "/"


@cache
def _run_facet_class() -> type:
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class ClickstreamRunFacet(RunFacet):
        """The clickstream task's batch and counts (``batch_id``, ``sessions``, ``events``, ...)."""

        batch_id: str | None = None
        facts: dict[str, Any] = attrs.field(factory=dict)

    return ClickstreamRunFacet


def to_openlineage(lineage: Lineage, store_url: URL) -> Any:
    """``OperatorLineage`` (OpenLineage provider) for ``lineage``; the store's tables named after ``store_url``."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import input_statistics_input_dataset, output_statistics_output_dataset

    namespace, prefix = store_namespace(store_url)

    def named(item: Table | Location) -> tuple[str, str]:
        return (namespace, f"{prefix}.{item.name}") if isinstance(item, Table) else location_name(item.uri)

    def counts(item: Table | Location) -> dict[str, int | None]:
        if isinstance(item, Location):
            return {"rowCount": item.rows, "fileCount": item.files, "size": item.size}
        return {"rowCount": item.rows, "fileCount": None, "size": None}

    inputs = []
    for item in lineage.inputs:
        stats = counts(item)
        in_facets: dict[str, Any] = {}
        if any(v is not None for v in stats.values()):
            in_facets["inputStatistics"] = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=stats["rowCount"], fileCount=stats["fileCount"], size=stats["size"]
            )
        inputs.append(InputDataset(*named(item), inputFacets=in_facets))
    outputs = []
    for item in lineage.outputs:
        stats = counts(item)
        out_facets: dict[str, Any] = {}
        if any(v is not None for v in stats.values()):
            out_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=stats["rowCount"], fileCount=stats["fileCount"], size=stats["size"]
            )
        outputs.append(OutputDataset(*named(item), outputFacets=out_facets))
    run = dict(lineage.run)
    facet = _run_facet_class()(batch_id=run.pop("batch_id", None), facts=run)
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={RUN_FACET: facet})
