"""Input checks of the store: model validation, the live-ingestion window and the size limits.

Every failure is :class:`~clickstream.store.errors.InvalidInput` whose detail names the field (with its
path inside the request, e.g. ``events.1.created_at``), raised before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from pydantic import BaseModel, ValidationError

from clickstream import models
from clickstream.store.config import StoreConfig
from clickstream.store.db import dumps
from clickstream.store.errors import InvalidInput, errors_detail
from clickstream.store.fastrows import LiveEvent, LiveSession, content_hash
from clickstream.store.rows import session_columns

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate ``data`` into ``model``; a failure becomes :class:`InvalidInput` naming every bad field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [
            {"loc": [*(prefix.split(".") if prefix else []), *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)
        ]
        raise InvalidInput(errors_detail(errors), errors) from None


def utf8_len(text: str, bound: int) -> int:
    """Bytes of ``text`` in UTF-8, computed only when it may exceed ``bound`` (at most 4 bytes a character)."""
    return len(text) if len(text) * 4 <= bound else len(text.encode("utf-8", "surrogatepass"))


def int_between(field: str, value: int, low: int, high: int) -> None:
    """``low <= value <= high`` for an integer (not a bool); :class:`InvalidInput` naming ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput.field(field, f"must be an integer between {low} and {high}, got {value!r}")


def optional_text(field: str, value: str | None, max_length: int) -> str | None:
    """``value`` if None or a text of 1..``max_length`` characters without NUL; :class:`InvalidInput` naming
    ``field`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length or "\x00" in value:
        raise InvalidInput.field(field, f"must be a text of 1 to {max_length} characters without NUL, got {value!r}")
    return value


class Checks:
    """The checks that depend on the store's configuration.

    :param config: the bounds (:class:`~clickstream.store.config.StoreConfig`).
    """

    def __init__(self, config: StoreConfig):
        self.config = config

    def window(self, field: str, value: int | None, now: int) -> None:
        """Live ingestion takes timestamps within ``window_back_ms`` before and ``window_ahead_ms`` after
        ``now``; an omitted one (None: the time of receipt) is in the window by definition."""
        if value is None:
            return
        if value < now - self.config.window_back_ms:
            raise InvalidInput.field(
                field,
                f"{value} is more than {self.config.window_back_ms // 1000} s in the past; "
                "live ingestion only takes recent timestamps (import older data with the history import, "
                "DAG clickstream_import)",
            )
        if value > now + self.config.window_ahead_ms:
            raise InvalidInput.field(
                field, f"{value} is more than {self.config.window_ahead_ms // 1000} s in the future"
            )

    def json_size(self, field: str, text: str | None) -> None:
        """A free-form JSON object (as its JSON text) holds at most ``max_json_bytes``."""
        bound = self.config.max_json_bytes
        if text is not None and (size := utf8_len(text, bound)) > bound:
            raise InvalidInput.field(
                field, f"JSON object of {size} bytes; at most {bound} bytes ([clickstream] max_json_bytes)"
            )

    def session_params(self, body: models.SessionIn, now: int, *, check_window: bool) -> dict[str, Any]:
        """The stored columns of a registration after the live checks: the window (if ``check_window``)
        and the size limits ``max_results`` and ``max_json_bytes``."""
        self._registration_window_and_count(body, now, check_window=check_window)
        columns = session_columns(body, now)
        self._registration_sizes(body, columns["search_results"], columns["search_meta"], columns["payload_filter"])
        return columns

    def _registration_window_and_count(
        self, body: models.SessionIn | LiveSession, now: int, *, check_window: bool
    ) -> None:
        """A registration's first live checks, either path's body: the window (if ``check_window``), then
        ``max_results``."""
        cfg = self.config
        if check_window:
            self.window("created_at", body.created_at, now)
        if len(body.search_results) > cfg.max_results:
            raise InvalidInput.field(
                "search_results",
                f"{len(body.search_results)} results; at most {cfg.max_results} a session ([clickstream] max_results)",
            )

    def _registration_sizes(
        self,
        body: models.SessionIn | LiveSession,
        results: str,
        search_meta: str | None,
        payload_filter: str | None,
    ) -> None:
        """A registration's ``max_json_bytes`` checks, on its JSON columns' texts (either path's): ``search_meta``,
        ``payload_filter``, then each result's ``meta`` (only a long ``search_results`` text can hold a big one)."""
        bound = self.config.max_json_bytes
        self.json_text_size("search_meta", search_meta)
        self.json_text_size("payload_filter", payload_filter)
        if utf8_len(results, bound) > bound // 2:
            results_of: Sequence[Any] = body.search_results  # either path's results: each has .meta
            for i, result in enumerate(results_of):
                self.json_text_size(f"search_results.{i}.meta", dumps(result.meta))

    def json_text_size(self, field: str, text: str | None) -> None:
        """:meth:`json_size` of a JSON column's text as the fast path (:mod:`clickstream.store.fastrows`) writes
        it. Near the bound, the size is measured on the text the store writes for the value (msgspec may spell
        a number otherwise, e.g. ``1e16`` for ``1e+16``), so a body at the limit is judged as the models' path
        judges it."""
        if text is None:
            return
        if utf8_len(text, self.config.max_json_bytes) > self.config.max_json_bytes // 2:
            text = dumps(json.loads(text))
        self.json_size(field, text)

    def live_session_params(
        self,
        taken: tuple[LiveSession, tuple[str, str | None, str | None, str | None]],
        now: int,
        *,
        check_window: bool,
    ) -> dict[str, Any]:
        """:meth:`session_params` of a registration the fast path took
        (:func:`clickstream.store.fastrows.live_session`): the same checks in the same order, the same
        reasons, the same columns and content hash."""
        s, (results, search_meta, payload_filter, sort_by) = taken
        self._registration_window_and_count(s, now, check_window=check_window)
        self._registration_sizes(s, results, search_meta, payload_filter)
        return {
            "session_id": s.session_id,
            "search_query": s.search_query,
            "search_results": results,
            "search_meta": search_meta,
            "payload_filter": payload_filter,
            "sort_by": sort_by,
            "user_id": s.user_id,
            "created_at": s.created_at if s.created_at is not None else now,
            "is_irrelevant": s.is_irrelevant,
            "is_payload_search": s.is_payload_search,
            "content_hash": content_hash(s),
        }

    def live_event_record(
        self, taken: tuple[LiveEvent, str | None], now: int, field: str = "", *, check_window: bool
    ) -> dict[str, Any]:
        """:meth:`event_record` of an event the fast path took (:func:`clickstream.store.fastrows.live_event`),
        with its ``session_id``; ``meta`` is its JSON text as a ``msgspec.Raw``
        (:func:`clickstream.store.fastrows.encode` writes it as the object). ``field`` as for
        :meth:`event_record`."""
        e, meta = taken
        prefix = f"{field}." if field else ""
        if check_window:
            self.window(f"{prefix}created_at", e.created_at, now)
        self.json_text_size(f"{prefix}meta", meta)
        return {
            "event_id": e.event_id,
            "object_id": e.object_id,
            "event_type": e.event_type,
            "created_at": e.created_at if e.created_at is not None else now,
            "meta": None if meta is None else msgspec.Raw(meta),
            "session_id": e.session_id,
        }

    def event_record(self, event: models.EventIn, now: int, field: str, *, check_window: bool) -> dict[str, Any]:
        """An event as an ``insert_events`` record, after the window and ``max_json_bytes`` checks;
        ``field`` is the event's path in the request (errors name ``<field>.created_at``), "" for none."""
        prefix = f"{field}." if field else ""
        if check_window:
            self.window(f"{prefix}created_at", event.created_at, now)
        record = event.model_dump()
        if record["created_at"] is None:
            record["created_at"] = now
        if record["meta"] is not None:
            self.json_size(f"{prefix}meta", dumps(record["meta"]))
        return record

    def page_bounds(self, after_number: int, limit: int, events_limit: int) -> None:
        """``after_number >= 0``, ``1 <= limit <= max_page``, ``0 <= events_limit <= max_events``."""
        cfg = self.config
        if after_number < 0:
            raise InvalidInput.field("after_number", f"must be >= 0, got {after_number}")
        self.limit(limit)
        if not 0 <= events_limit <= cfg.max_events:
            raise InvalidInput.field("events_limit", f"must be between 0 and {cfg.max_events}, got {events_limit}")

    def limit(self, limit: int) -> None:
        """``1 <= limit <= max_page`` (pages and claims)."""
        if not 1 <= limit <= self.config.max_page:
            raise InvalidInput.field("limit", f"must be between 1 and {self.config.max_page}, got {limit}")
