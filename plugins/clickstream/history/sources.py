"""Where the history import reads from: sources (a name and an opener) for local files, or for a path that is
a file or a folder, local or remote (``s3://...``). No Airflow here: the hook passes Airflow's
``ObjectStoragePath`` in as the way to open a URI."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from clickstream.history.options import FILE_SUFFIXES
from clickstream.store.errors import InvalidInput

#: A source: a display name (path or URI) and a callable opening it as a binary file object.
Source = tuple[str, Callable[[], AbstractContextManager[IO[bytes]]]]


def local_sources(*paths: str) -> list[Source]:
    """Sources for local files (tests, scripts); :func:`path_sources` finds them in a folder or behind a URI."""

    def opener(path: str) -> Callable[[], IO[bytes]]:
        return lambda: open(path, "rb")

    return [(str(p), opener(p)) for p in paths]


def path_sources(path: str, fmt: str, open_uri: Callable[[str], Any] | None = None) -> tuple[list[Source], int | None]:
    """The files at ``path`` as sources, and their total size in bytes (None if the store cannot tell).

    :param path: a file, or a folder whose files ending in the format's suffixes (:data:`FILE_SUFFIXES`) are
        taken in name order: ``/local/path``, or a URI (``file:///...``, ``s3://conn_id@bucket/prefix/``).
    :param fmt: ``jsonl`` or ``parquet`` (checked by the caller).
    :param open_uri: makes a path object (``is_dir``, ``is_file``, ``iterdir``, ``open``, ``stat``) of a URI,
        such as Airflow's ``ObjectStoragePath``. A plain local path is a :class:`pathlib.Path`: a URI's first
        use may load every installed filesystem (about a second with the amazon provider), a fixed cost local
        files should not pay.
    :raises InvalidInput: the path does not exist, is a URI without ``open_uri``, or is a folder without files
        of the format.
    """
    if "://" in path:
        if open_uri is None:
            raise InvalidInput.field("path", f"{path}: a URI needs object storage (import through the hook)")
        root: Any = open_uri(path)
    else:
        root = Path(path)
    if root.is_dir():
        files = sorted((p for p in root.iterdir() if p.is_file() and p.name.endswith(FILE_SUFFIXES[fmt])), key=str)
        if not files:
            raise InvalidInput.field("path", f"no {'/'.join(FILE_SUFFIXES[fmt])} file in {path}")
    elif root.is_file():
        files = [root]
    else:
        raise InvalidInput.field("path", f"{path} does not exist")
    sources: list[Source] = [(str(p), _opener(p)) for p in files]
    try:
        total_bytes: int | None = sum(p.stat().st_size for p in files)
    except (OSError, AttributeError, TypeError):  # a store that cannot tell sizes: progress without a total
        total_bytes = None
    return sources, total_bytes


def _opener(path: Any) -> Callable[[], IO[bytes]]:
    """Opens ``path`` (a :class:`pathlib.Path` or an object storage path) for reading bytes."""
    return lambda: path.open("rb")
