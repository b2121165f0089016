"""The history import's readers: JSON Lines (``.gz`` decompressed by name) and Parquet files, read in chunks
of rows. A row comes as the reader found it (see :func:`read_chunks`); :func:`clickstream.history.checks.check_row`
judges it."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, cast

import msgspec

from clickstream.store.errors import InvalidInput

#: Fields holding JSON objects/lists: in Parquet they may be nested columns or strings holding JSON.
JSON_FIELDS = ("search_results", "search_meta", "payload_filter", "sort_by", "events", "meta")
_JSON_DECODE = msgspec.json.Decoder().decode


def position(raw: IO[bytes]) -> int:
    """How far into ``raw`` (the file as stored, before decompression) reading has got; 0 if unknown."""
    try:
        return raw.tell()
    except (OSError, ValueError, AttributeError):
        return 0


def size(raw: IO[bytes]) -> int:
    """The size of ``raw`` in bytes (its end position); 0 if it cannot seek."""
    try:
        position = raw.tell()
        end = raw.seek(0, 2)
        raw.seek(position)
        return end
    except (OSError, ValueError, AttributeError):
        return 0


@contextlib.contextmanager
def decompressed(raw: IO[bytes], name: str, fmt: str) -> Iterator[IO[bytes]]:
    if fmt == "jsonl" and name.endswith(".gz"):
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield cast(IO[bytes], unzipped)
    else:
        yield raw


def read_chunks(fileobj: IO[bytes], fmt: str, chunk_rows: int) -> Iterator[list[tuple[int, dict | str | bytes]]]:
    """Rows of a file in chunks: ``(line, row)``, where ``row`` is a dict, the reason it is unreadable, or
    (JSON Lines) the raw line."""
    reader = _jsonl_rows(fileobj) if fmt == "jsonl" else _parquet_rows(fileobj, chunk_rows)
    chunk: list[tuple[int, dict | str | bytes]] = []
    for item in reader:
        chunk.append(item)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_rows(fileobj: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSON Lines file, as bytes; line numbers are physical (blank lines count)."""
    for line, raw in enumerate(fileobj, start=1):
        if raw.strip():
            yield line, raw


def parse_line(raw: bytes) -> dict | str:
    """One JSON Lines line as a dict or, if unreadable, the reason."""
    try:
        row = json.loads(raw)
    except UnicodeDecodeError as err:
        return f"not UTF-8 text: {err.reason} at byte {err.start}"
    except json.JSONDecodeError as err:
        return f"invalid JSON: {err.msg} (column {err.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    return row if isinstance(row, dict) else f"a row must be a JSON object, got {type(row).__name__}"


def _parquet_rows(fileobj: IO[bytes], chunk_rows: int) -> Iterator[tuple[int, dict | str | bytes]]:
    """Parquet rows, one record batch at a time; ``line`` is the 1-based row number.

    Null values count as absent (so one file may mix session and event rows); object fields may be nested
    columns or strings holding JSON; timestamp columns become milliseconds since epoch. In a record batch of
    plain columns (text, JSON text, integers, booleans), a row comes as the JSON text of the row (see
    :func:`batch_lines`), which takes the JSON Lines fast path; any other row comes as a dict. A dict whose
    every object came from a JSON string decoded by msgspec (which refuses NaN and infinities) is a
    :class:`FiniteRow`: the fast path then skips its walk for non-finite numbers.
    """
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(fileobj)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise InvalidInput.field("path", f"not a readable Parquet file: {err}") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        lines = batch_lines(batch)
        if lines is None:  # the whole batch the dict way: converted once
            for record in batch.to_pylist():
                number += 1
                yield number, _as_row(record)
            continue
        for i, line in enumerate(lines):
            number += 1
            yield number, (ParquetLine(line, batch, i) if line is not None else _dict_row(batch, i))


def _dict_row(batch: Any, index: int) -> dict | str:
    """Row ``index`` of a Parquet record batch the dict way (see :func:`_as_row`)."""
    return _as_row(batch.slice(index, 1).to_pylist()[0])


def _as_row(record: dict[str, Any]) -> dict | str:
    """A Parquet record as a row dict (a :class:`FiniteRow` when it can be), or the reason it is unreadable."""
    unchecked = [False]
    row = _parquet_row(record, unchecked)
    return row if isinstance(row, str) or unchecked[0] else FiniteRow(row)


class ParquetLine(bytes):
    """A Parquet row as JSON text (:func:`batch_lines`), for the fast path. A row the fast path does not
    take is judged the dict way (:meth:`dict_row`) like any Parquet row, so its outcome and the reason of a
    refusal do not depend on which way its batch went (the dict way also reads embedded events' null values
    as absent and their JSON-string ``meta``)."""

    _batch: Any
    _row: int

    def __new__(cls, text: bytes, batch: Any, row: int) -> ParquetLine:
        line = super().__new__(cls, text)
        line._batch, line._row = batch, row
        return line

    def dict_row(self) -> dict | str:
        return _dict_row(self._batch, self._row)


_JSON_RAW = msgspec.json.Decoder(msgspec.Raw).decode  # checks one JSON text, builds no Python object
_JSON_TEXT = msgspec.json.Encoder().encode


def batch_lines(batch: Any) -> list[bytes | None] | None:
    """Each row of a Parquet record batch as the JSON object text a JSON Lines file would hold for it, or
    None for the rows (or, when a column is not plain, the batch) that go the dict way.

    Plain columns: text (a JSON-string column's text is put in as it is, once msgspec has found it to be
    exactly one JSON value: anything else, such as invalid JSON, NaN or trailing text, sends the row the
    dict way, which gives the reason), integers, booleans, all-null. Nulls are left out, as absent. A row the
    fast path takes from this text has the values the dict way would give it; any other is judged the dict
    way (:class:`ParquetLine`).
    """
    import pyarrow as pa

    if len(set(batch.schema.names)) != len(batch.schema.names):  # a repeated column name: the dict way
        return None
    columns: list[list[bytes | None]] = []
    slow: set[int] = set()
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type
        key = _JSON_TEXT(name) + b":"
        values = column.to_pylist()
        if pa.types.is_null(kind):
            continue
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            parts: list[bytes | None] = []
            as_json = name in JSON_FIELDS
            for i, value in enumerate(values):
                if value is None:
                    parts.append(None)
                    continue
                try:
                    if as_json:
                        text = value.encode()
                        _JSON_RAW(text)
                    else:
                        text = _JSON_TEXT(value)
                except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
                    slow.add(i)
                    parts.append(None)
                    continue
                parts.append(key + text)
            columns.append(parts)
        elif pa.types.is_integer(kind):
            columns.append([None if v is None else key + str(v).encode() for v in values])
        elif pa.types.is_boolean(kind):
            columns.append([None if v is None else key + (b"true" if v else b"false") for v in values])
        else:
            return None
    # bytes parts are never empty, so filter(None, ...) leaves out exactly the nulls
    lines: list[bytes | None] = [b"{" + b",".join(filter(None, parts)) + b"}" for parts in zip(*columns, strict=True)]
    if not columns:
        lines = [b"{}"] * batch.num_rows
    for i in slow:
        lines[i] = None
    return lines


class FiniteRow(dict):
    """A Parquet row known to hold no NaN or infinite number (see :func:`_parquet_rows`)."""


def _decode_json_column(value: str, unchecked: list[bool]) -> Any:
    """A JSON string column's value: msgspec first (C; it refuses NaN, infinities, lone surrogates), else
    ``json.loads`` (which takes them, for the models to refuse with their message; its error is the row's
    reason). Both give the same value for what msgspec takes."""
    try:
        return _JSON_DECODE(value)
    except (msgspec.DecodeError, RecursionError):
        unchecked[0] = True
        return json.loads(value)


def _parquet_row(record: dict[str, Any], unchecked: list[bool], decoded: bool = False) -> dict | str:
    """One Parquet record as a row dict, or the reason it is unreadable; sets ``unchecked[0]`` when a value
    may hold a non-finite number (from a nested column or a float column, or JSON that only ``json.loads``
    took). ``decoded``: ``record`` is an event of a JSON string column (its values came from that JSON)."""
    row = {}
    for key, value in record.items():
        if value is None:
            continue
        from_json = decoded
        if key in JSON_FIELDS and isinstance(value, str):
            try:
                value = _decode_json_column(value, unchecked)
            except json.JSONDecodeError as err:
                return f"{key}: invalid JSON in string column: {err.msg} (column {err.colno})"
            except RecursionError:
                return f"{key}: invalid JSON in string column: nested too deeply"
            from_json = True
        elif isinstance(value, datetime):
            value = _millis(value)
        elif not decoded and isinstance(value, (dict, list, float)):
            unchecked[0] = True
        if key == "events" and isinstance(value, list):
            value = [_parquet_row(e, unchecked, from_json) if isinstance(e, dict) else e for e in value]
            bad = next((e for e in value if isinstance(e, str)), None)
            if bad is not None:
                return f"events: {bad}"
        row[key] = value
    return row


def _millis(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
