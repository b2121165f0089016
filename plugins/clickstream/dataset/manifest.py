"""The dataset's manifest, ``_manifest.json``: written last, from the shards' results; read back; summarised.

A reader that finds the manifest finds a complete dataset (docs/operators-and-dags.md, "The dataset").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from clickstream.dataset.schema import FORMAT, LABEL_TABLES, MANIFEST, TABLES
from clickstream.dataset.writer import list_parts

log = logging.getLogger(__name__)


def write_manifest(
    root: Any,
    batch_id: str,
    shards: Sequence[dict[str, Any]],
    *,
    extra: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    logger: Any | None = None,
) -> dict[str, Any]:
    """Combine the shards' results into ``_manifest.json``, written last; returns the manifest.

    Part files that no shard reported (left by an earlier run with another shard plan) are deleted first,
    so the folder holds exactly the manifest's parts. Shards must not overlap.

    :param root: the dataset root ``<base_path>/<batch_id>``.
    :param batch_id: the batch the dataset holds.
    :param shards: the results of :meth:`clickstream.dataset.writer.ShardWriter.write`, in any order.
    :param extra: more fields for the manifest (e.g. the release's id and time).
    :param labels: the labels step's result (:func:`clickstream.dataset.labels.write_batch_labels`): its
        three tables are then listed in ``tables`` and their parts, rows and the fit's report in ``labels``.
    :param logger: where progress goes.
    """
    logger = logger or log
    shards = sorted(shards, key=lambda s: s["after_number"])
    for prev, nxt in pairwise(shards):
        if prev["until_number"] is None or prev["until_number"] > nxt["after_number"]:
            raise ValueError(
                f"shards overlap: ({prev['after_number']}, {prev['until_number']}] and "
                f"({nxt['after_number']}, {nxt['until_number']}]"
            )
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
        "tables": {t: f"{t}/" for t in (*TABLES, *(LABEL_TABLES if labels else ()))},
        "parts": parts,
        "shards": [{k: s[k] for k in ("after_number", "until_number", "sessions", "events", "pages")} for s in shards],
        "written_at": int(time.time() * 1000),
        **(extra or {}),
        **({"labels": labels} if labels else {}),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info(
        "dataset of batch %s complete: %d sessions, %d events, %d part(s); manifest %s",
        batch_id,
        manifest["sessions"],
        manifest["events"],
        len(parts),
        root / MANIFEST,
    )
    return manifest


def remove_manifest(root: Any) -> bool:
    """Delete the manifest (the dataset is being rewritten); True if there was one.

    :param root: the dataset root ``<base_path>/<batch_id>``.
    """
    path = root / MANIFEST
    if path.exists():
        path.unlink()
        return True
    return False


def read_manifest(root: Any) -> dict[str, Any]:
    """The manifest of a dataset root; FileNotFoundError when the dataset is missing or incomplete.

    :param root: the dataset root ``<base_path>/<batch_id>``.
    """
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: no complete dataset at {root}")
    return json.loads(path.read_text())


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The small part of a manifest fit for XCom: counts and paths, not the part list.

    :param manifest: a manifest, as :func:`write_manifest` returns it.
    """
    root = manifest["path"].rstrip("/")
    return {
        "batch_id": manifest["batch_id"],
        "sessions": manifest["sessions"],
        "events": manifest["events"],
        "parts": len(manifest["parts"]),
        "shards": len(manifest["shards"]),
        "paths": {"root": root, "manifest": f"{root}/{MANIFEST}", **{t: f"{root}/{t}/" for t in manifest["tables"]}},
    }
