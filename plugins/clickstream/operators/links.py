"""Extra links of the clickstream operators, the buttons on a task instance in the Airflow UI.

* :class:`BatchLink` ("Batch"): the batch's view on the Clickstream page,
  ``<[api] base_url path>/clickstream/ui/batches/<batch_id>``;
* :class:`DatasetLink` ("Dataset"): where the batch's dataset is, its manifest's path or URI
  (``file:///...`` for a local base path, ``s3://...`` on object storage).

How Airflow 3.3 shows them: when a task finishes, its worker calls each link of ``operator_extra_links`` with
the operator it ran (templates rendered, ``execute`` done) and keeps the URL in an XCom (``_link_<class>``);
the serialized DAG names each link and its XCom key, so the API server reads the URL back from XCom without
importing this module. Nothing needs registering in the plugin for that (a plugin's ``operator_extra_links``
would make the API server compute the link itself, from a serialized operator that has none of the
attributes read here); the provider info lists the classes under ``extra-links`` for
``airflow providers links``. A link that does not apply (nothing released, no batch id) is empty, which the
UI shows as a disabled button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: The batch view of the Clickstream page, below ``[api] base_url``'s path.
BATCH_VIEW = "/clickstream/ui/batches/{batch_id}"


def batch_view_url(batch_id: str) -> str:
    """The Clickstream page's view of ``batch_id``, under the path of ``[api] base_url``."""
    from clickstream.plugin import base_url_path

    return base_url_path(BATCH_VIEW.format(batch_id=quote(batch_id, safe="")))


def linked_batch_id(operator: Any) -> str | None:
    """The batch a finished clickstream task worked on: what a release released, else its ``batch_id``."""
    released = getattr(operator, "released", None)
    batch_id = released.get("batch_id") if isinstance(released, dict) else getattr(operator, "batch_id", None)
    return batch_id if isinstance(batch_id, str) and batch_id.strip() else None


def linked_dataset(operator: Any) -> str | None:
    """The dataset manifest of a finished task, as its operator's ``dataset_manifest()`` tells it (the extract
    and metrics operators have one); None when it has none or cannot tell (e.g. a bad batch id)."""
    method = getattr(operator, "dataset_manifest", None)
    if not callable(method):
        return None
    try:
        location = method()
    except ValueError:  # a batch id that cannot name a folder: the task failed on it already
        return None
    return location if isinstance(location, str) and location else None


class BatchLink(BaseOperatorLink):
    """ "Batch": the batch's view on the Clickstream page of the Airflow UI."""

    name = "Batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        batch_id = linked_batch_id(operator)
        return batch_view_url(batch_id) if batch_id else ""


class DatasetLink(BaseOperatorLink):
    """ "Dataset": the manifest of the batch's Parquet dataset (path or URI)."""

    name = "Dataset"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return linked_dataset(operator) or ""
