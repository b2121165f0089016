"""Request and response shapes shared by the REST views, the hook and the operators.

The shapes are the REST API's (docs/rest-api.md: names, JSON layout, bounds and units); the store's
operations that take and answer them are in docs/store.md. They hold no business rules beyond
field-level validation: everything that needs the store (windows relative to *now*, eligibility,
conflicts) lives in :mod:`clickstream.store`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

#: Timestamps below this are taken to be in seconds, not milliseconds (10^11 ms is March 1973).
MIN_MILLIS = 10**11
#: The largest value a BIGINT column holds.
MAX_BIGINT = 2**63 - 1


def _check_storable(value: Any, path: str = "") -> None:
    """Reject what JSON or the database cannot store: NaN/Infinity, NUL characters, lone surrogates."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'}: {value} is not a JSON number (no NaN or Infinity)")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path or 'value'}: must not contain the NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{path or 'value'}: not valid Unicode text (lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, f"{path}.{key}".lstrip("."))
            _check_storable(item, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_storable(item, f"{path}[{i}]")


def _storable(value: Any) -> Any:
    if not (type(value) is dict and _flat_storable(value)):
        _check_storable(value)
    return value


def _flat_storable(value: dict) -> bool:
    """Fast path of :func:`_check_storable` for the common flat object of ASCII keys and scalars (bulk
    import checks millions of them): True only if the object is surely storable. False means "walk it"
    (nested values, non-ASCII text, or a problem), so the walk still gives the error and its path."""
    for key, item in value.items():
        if type(key) is not str or not key.isascii() or "\x00" in key:
            return False
        kind = type(item)
        if kind is str:
            if not item.isascii() or "\x00" in item:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif not (kind is int or kind is bool or item is None):
            return False
    return True


SessionId = Annotated[str, Field(min_length=1, max_length=128)]
ReleaseId = Annotated[str, Field(min_length=1, max_length=512)]
UserId = Annotated[str, Field(min_length=1, max_length=256)]
ShortId = Annotated[str, Field(min_length=1, max_length=256)]
#: A free-form JSON object, stored as is; it must be storable on every backend.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
Millis = Annotated[int, Field(le=MAX_BIGINT, description="milliseconds since epoch")]


def _check_millis(value: int | None) -> int | None:
    if value is not None and value < MIN_MILLIS:
        raise ValueError(
            f"timestamp {value} looks like seconds since epoch; send milliseconds since epoch "
            f"(values below {MIN_MILLIS} are rejected)"
        )
    return value


class _Strict(BaseModel):
    """Request bodies reject unknown fields, so a typo in a field name is an error, not silence, and
    text the database cannot store (NUL, lone surrogates), so the error names the field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not (value.isascii() and "\x00" not in value):  # ASCII without NUL: fine
            _check_storable(value)
        return value


class SearchResult(_Strict):
    object_id: ShortId
    rank: float | None = Field(None, allow_inf_nan=False)
    meta: JsonObject | None = None


class SortBy(_Strict):
    field: str = Field(min_length=1)
    order: Literal["asc", "desc"]


class SessionIn(_Strict):
    """A session as a search client registers it."""

    session_id: SessionId
    search_query: str | None = None
    search_results: list[SearchResult] = Field(default_factory=list)
    search_meta: JsonObject | None = None
    payload_filter: JsonObject | None = None
    sort_by: SortBy | None = None
    user_id: UserId | None = None
    created_at: Millis | None = Field(
        None, description="milliseconds since epoch; omitted means the server's time of receipt"
    )
    is_irrelevant: bool = False
    is_payload_search: bool = False

    _millis = field_validator("created_at")(_check_millis)


class EventIn(_Strict):
    event_id: ShortId
    object_id: ShortId
    event_type: str = Field(default="click", min_length=1, max_length=64)
    created_at: Millis | None = Field(
        None, description="milliseconds since epoch; omitted means the server's time of receipt"
    )
    meta: JsonObject | None = None

    _millis = field_validator("created_at")(_check_millis)


class PushEventsIn(_Strict):
    session_id: SessionId
    events: list[EventIn] = Field(max_length=10_000)


class BulkEventIn(EventIn):
    """An event of ``POST /bulk``: an item of ``POST /session/events`` plus its ``session_id``."""

    session_id: SessionId


class BulkIn(_Strict):
    """The body of ``POST /bulk``. Items are validated one by one (an invalid item is rejected, not the
    whole request), so the lists take any JSON value here; the documented item schemas are
    :class:`SessionIn` and :class:`BulkEventIn`."""

    sessions: list[Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/SessionIn"})]] = Field(
        default_factory=list, description="sessions, each as the body of POST /session"
    )
    events: list[Annotated[Any, WithJsonSchema(BulkEventIn.model_json_schema())]] = Field(
        default_factory=list, description="events, each as an item of POST /session/events plus its session_id"
    )


class SessionIdIn(_Strict):
    session_id: SessionId


class ReleaseIn(_Strict):
    release_id: ReleaseId


class UserIdIn(_Strict):
    user_id: UserId


# ---------------------------------------------------------------------------------------------- answers


class Event(BaseModel):
    event_id: str
    object_id: str
    event_type: str
    created_at: int
    meta: JsonObject | None = None


class BatchSession(BaseModel):
    """One session of ``GET /batch/sessions``, exactly the API document's shape."""

    session_number: int
    session_id: str
    search_query: str | None = None
    search_results: list[SearchResult] = Field(default_factory=list)
    search_meta: JsonObject | None = None
    payload_filter: JsonObject | None = None
    sort_by: SortBy | None = None
    user_id: str | None = None
    created_at: int
    is_irrelevant: bool
    events: list[Event] = Field(default_factory=list)


class BatchSessionsPage(BaseModel):
    batch_id: str
    last_number: int | None = Field(description="number of the last session in the page; null when empty")
    sessions: list[BatchSession]


class SessionOut(BatchSession):
    """A session by id: the batch view plus store-assigned and registration-time fields."""

    batch_id: str
    is_payload_search: bool


class RegisterResult(BaseModel):
    session_id: str
    batch_id: str | None = Field(description="null when status is erased")
    session_number: int | None = Field(description="null when status is erased")
    status: Literal["registered", "already_registered", "erased"] = Field(
        description="erased: the session_id belongs to an erased user; nothing was stored"
    )
    events_attached: int = Field(0, description="events that had arrived before the session registered")


class PushEventsResult(BaseModel):
    session_id: str
    stored: int
    duplicates: int
    over_limit: int = Field(
        0, description="events not stored: the session already holds [clickstream] max_events_per_session events"
    )
    erased: int = Field(0, description="events not stored: the session belongs to an erased user")
    purged: int = Field(
        0,
        description="events not stored: the session was in a batch that retention purged (and is not registered again)",
    )


class BulkSessionCounts(BaseModel):
    registered: int = 0
    already_registered: int = 0
    erased: int = Field(0, description="not stored: the session_id belongs to an erased user")


class BulkEventCounts(BaseModel):
    stored: int = 0
    duplicates: int = Field(0, description="event_id already stored for the session, or sent twice")
    over_limit: int = Field(0, description="not stored: the session holds max_events_per_session events")
    erased: int = Field(0, description="not stored: the session belongs to an erased user")
    purged: int = Field(0, description="not stored: the session was in a purged batch (and is not registered again)")


class BulkRejection(BaseModel):
    item: str = Field(description='the rejected item, e.g. "sessions[3]" or "events[0]"')
    session_id: str | None = None
    error: str = Field(description="why, naming the field")


class BulkResult(BaseModel):
    """Every item of a ``POST /bulk`` is counted once: the sessions' registered + already_registered +
    erased, the events' stored + duplicates + over_limit + erased + purged, and len(rejected) add up to the
    items sent."""

    sessions: BulkSessionCounts = Field(default_factory=BulkSessionCounts)
    events: BulkEventCounts = Field(default_factory=BulkEventCounts)
    rejected: list[BulkRejection] = Field(default_factory=list)


class IrrelevantResult(BaseModel):
    session_id: str
    is_irrelevant: bool = True
    changed: bool


class UseForImprovementResult(BaseModel):
    session_id: str
    status: Literal["marked", "already_marked", "skipped"]
    reason: Literal["payload_search", "no_events"] | None = None


class MarkCounts(BaseModel):
    """Outcome counts of marking many sessions at once."""

    marked: int = 0
    already_marked: int = 0
    skipped_payload_search: int = 0
    skipped_no_events: int = 0
    not_found: int = 0


class ReleaseResult(BaseModel):
    release_id: str
    batch_id: str
    released_at: int


class BatchInfo(BaseModel):
    batch_id: str
    status: Literal["collecting", "released"]
    created_at: int
    release_id: str | None = None
    released_at: int | None = None
    sessions: int | None = None
    min_number: int | None = None
    max_number: int | None = None


class ImprovementMark(BaseModel):
    session_id: str
    status: Literal["pending", "processing", "done", "failed"]
    attempts: int
    created_at: int
    updated_at: int
    last_error: str | None = None


class BatchMetrics(BaseModel):
    batch_id: str
    sessions: int
    events: int
    clicks: int
    sessions_with_click: int
    click_through_rate: float | None = Field(description="sessions with a click / sessions")
    mean_reciprocal_rank: float | None = Field(
        description="mean of 1/position of the first clicked result, over sessions (0 when no click)"
    )
    no_click_rate: float | None
    irrelevant_rate: float | None
    late_events: int = Field(description="events that arrived after the batch was released")


class ErrorDetail(BaseModel):
    """Every error answer of the REST API: ``detail`` names the offending field or id."""

    detail: str
    errors: list[JsonObject] | None = Field(
        None, description="one entry per offending field: loc (path to the field), msg, type"
    )


class EraseResult(BaseModel):
    user_id: str
    sessions: int
    events: int
    marks: int
    batches: list[str] = Field(description="batches that held the user's sessions (released ones may be in datasets)")
    tombstones: int = Field(
        0, description="session ids recorded as erased: later registrations and events for them are not stored"
    )


class PurgeResult(BaseModel):
    """What the purge of one released batch removed."""

    batch_id: str
    sessions: int
    events: int
    marks: int
    chunks: int = Field(description="transactions it took (each at most chunk_sessions sessions)")


# ------------------------------------------------------------------------- batch overview (the UI page)


class BatchQuality(BaseModel):
    """The search-quality metrics of a released batch, as the batch list and the page show them (a
    :class:`BatchMetrics` under short names). Rates are null for an empty batch."""

    ctr: float | None = Field(description="click-through rate: sessions with a click / sessions")
    mrr: float | None = Field(description="mean reciprocal rank of the first click (0 for a session without one)")
    no_click_rate: float | None = Field(description="sessions without a click / sessions")
    irrelevant_rate: float | None = Field(description="sessions flagged irrelevant / sessions")
    late_events: int = Field(description="events that arrived after the release (when the metrics were computed)")


class BatchSummary(BaseModel):
    """A batch as ``GET /batches`` lists it: status, times, counts, metrics and dataset."""

    batch_id: str
    status: Literal["collecting", "released"]
    created_at: int
    released_at: int | None = None
    release_id: str | None = None
    sessions: int | None = Field(
        description="sessions of the batch (a released batch: when its metrics were computed; null while they "
        "are not computed yet)"
    )
    events: int | None = Field(
        description="events of its sessions (a released batch: when its metrics were computed; null while they "
        "are not computed yet)"
    )
    metrics: BatchQuality | None = Field(
        description="null while the batch is collecting, and for a released batch whose metrics are not computed "
        "yet (computed by the next reads or by the release DAG's metrics task)"
    )
    dataset: str | None = Field(description="the manifest of the batch's dataset (path or URI); null until written")


class BatchList(BaseModel):
    batches: list[BatchSummary]
    next_before: str | None = Field(
        description="pass as `before` for the next (older) page; null when there is no older batch"
    )


class PositionCtr(BaseModel):
    position: int = Field(description="1-based position in the search results")
    shown: int = Field(description="sessions of the batch with a result at this position")
    clicks: int = Field(description="sessions with a click on the result at this position")
    ctr: float | None = Field(description="clicks / shown; null when nothing was shown there")


class BatchPositions(BaseModel):
    """Click-through rate by result position: the position-bias curve of a batch."""

    batch_id: str
    positions: list[PositionCtr]


class MetricsPoint(BaseModel):
    """One released batch on the metrics plots."""

    batch_id: str
    released_at: int
    sessions: int
    events: int
    ctr: float | None
    mrr: float | None
    no_click_rate: float | None
    irrelevant_rate: float | None
    late_events: int


class MetricsBackfill(BaseModel):
    """What :meth:`compute_missing_metrics` computed."""

    computed: list[str] = Field(description="released batches whose metrics were computed and kept, newest first")
    more: bool = Field(description="more released batches without kept metrics are left")


class MetricsSeries(BaseModel):
    metrics: list[MetricsPoint] = Field(description="the last released batches, oldest first")


# ------------------------------------------------------------------------- search analytics (by query)


class AnalyticsComputed(BaseModel):
    """What :meth:`compute_batch_analytics` computed for a released batch, and whether it was kept."""

    batch_id: str
    kept: bool = Field(
        description="kept in the store (false: a user was erased since its snapshot, the batch was purged, or "
        "a newer computation is kept)"
    )
    sessions: int
    keyword_sessions: int = Field(description="sessions with a query (payload searches have none)")
    distinct_queries: int = Field(description="distinct normalized queries of the batch")
    kept_queries: int = Field(description="queries kept (the union of the three top lists)")
    distinct_objects: int = Field(description="distinct objects shown in keyword sessions")
    kept_objects: int
    top_n: int = Field(description="[clickstream] analytics_top_n when it was computed")


class MetricsStep(BaseModel):
    """What :meth:`metrics_step` computed: the batch metrics and, for a released batch, its search analytics
    (one aggregation pass)."""

    metrics: BatchMetrics
    analytics: AnalyticsComputed | None = Field(description="None for a collecting batch (nothing kept)")


class AnalyticsBackfill(BaseModel):
    """What :meth:`compute_missing_analytics` computed."""

    computed: list[str] = Field(description="released batches whose analytics were computed and kept, newest first")
    more: bool = Field(description="more released batches without kept analytics are left")


class AnalyticsRange(BaseModel):
    """The released batches a search-analytics answer covers, and their exact totals."""

    batches: list[str] = Field(description="released batches of the selection with kept analytics, newest first")
    missing: list[str] = Field(
        description="released batches of the selection whose analytics are not computed yet (left out; the "
        "release DAG's metrics task computes them)"
    )
    cut_batches: int = Field(
        description="batches whose kept lists were cut at their top N: a key missing from one of them has "
        "counts that are lower bounds (the row's lower_bound)"
    )
    sessions: int = Field(description="every session of the batches (payload searches included)")
    keyword_sessions: int
    payload_search_sessions: int
    sessions_with_click: int = Field(description="keyword sessions with a click")
    click_through_rate: float | None = Field(description="keyword sessions with a click / keyword sessions")
    no_click_rate: float | None
    mean_reciprocal_rank: float | None = Field(description="of the first click, over keyword sessions")
    avg_click_position: float | None = Field(
        description="mean 1-based position of the clicked results (a clicked object counts once a session)"
    )
    no_result_sessions: int
    irrelevant_sessions: int = Field(description="keyword sessions flagged irrelevant")


class SearchRow(BaseModel):
    """One normalized query, its counts summed over the batches and the rates they give."""

    query: str = Field(description="the normalized query (NFKC, lower case, trimmed, whitespace collapsed)")
    sessions: int
    sessions_with_click: int
    click_through_rate: float | None = Field(description="sessions with a click / sessions")
    no_click_sessions: int
    no_click_rate: float | None
    clicks: int = Field(description="clicked results: (session, object) pairs with a click on a shown result")
    avg_click_position: float | None = Field(
        description="mean 1-based position of the clicked results (null without a click on a result)"
    )
    mean_reciprocal_rank: float | None = Field(description="of the first click (0 for a session without one)")
    mean_results_shown: float | None = Field(description="mean length of the search results")
    no_result_sessions: int = Field(description="sessions with empty search results")
    irrelevant_sessions: int
    lower_bound: bool = Field(
        description="the query fell outside the kept top N of at least one batch: its counts are lower bounds"
    )


class SearchesPage(BaseModel):
    range: AnalyticsRange
    order_by: str
    direction: Literal["asc", "desc"]
    searches: list[SearchRow]
    total: int = Field(description="rows of the whole answer (every page)")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")


class HitRow(BaseModel):
    """One object (a search hit), its counts summed over the batches."""

    object_id: str
    impressions: int = Field(description="keyword sessions that showed it (a result listed twice counts once)")
    clicks: int = Field(description="of those, sessions with a click on it")
    click_through_rate: float | None = Field(description="clicks / impressions")
    mean_position: float | None = Field(description="mean 1-based position it was shown at (its first, if repeated)")
    lower_bound: bool = Field(
        description="the object fell outside the kept top N of at least one batch: its counts are lower bounds"
    )


class HitsPage(BaseModel):
    range: AnalyticsRange
    order_by: str
    direction: Literal["asc", "desc"]
    hits: list[HitRow]
    total: int = Field(description="rows of the whole answer (every page)")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")


class QueryBatchPoint(SearchRow):
    """One query in one batch."""

    batch_id: str
    released_at: int
    kept: bool = Field(description="the batch kept this query (false: zero, or a lower bound when lower_bound)")


class QueryAnalytics(BaseModel):
    """One normalized query over the selected batches: summed, per batch, by position, its top objects."""

    query: str = Field(description="the normalized query")
    range: AnalyticsRange
    summary: SearchRow
    batches: list[QueryBatchPoint] = Field(description="one point a batch of the range, oldest first")
    positions: list[PositionCtr] = Field(
        description="positions 1..20: sessions of this query showing a result there (shown), with a click on it"
    )
    top_objects: list[HitRow] = Field(description="its most shown objects (each batch keeps 20 a query)")
    labels: list[JsonObject] | None = Field(
        None, description="the debiased training-signal labels of this query, once the labels step keeps them"
    )


# ------------------------------------------------------------------------- training-signal labels (issue 22)


class Propensity(BaseModel):
    """One position of a batch's examination curve (the ``propensities`` table)."""

    position: int = Field(description="1-based position")
    impressions: int = Field(description="fitted impressions at this position (keyword sessions, not irrelevant)")
    clicks: int = Field(description="of those, with an event of [clickstream] label_event_types on the object")
    raw_ctr: float | None = Field(description="clicks / impressions; null without impressions")
    theta: float | None = Field(
        description="estimated examination probability (theta_1 = 1); null when the batch cannot identify it"
    )
    theta_se: float | None = Field(description="standard error of theta; null when unidentified")
    identified: bool
    reason: str | None = Field(description="why theta is unidentified (null when identified)")


class LabelsReport(BaseModel):
    """What the labels step fitted for a released batch, and whether the store kept it."""

    batch_id: str
    kept: bool = Field(
        description="kept in the store (false: a user was erased since its snapshot, the batch was purged, or a "
        "newer fit is kept)"
    )
    max_position: int = Field(description="[clickstream] label_max_position when it was fitted")
    label_event_types: list[str] = Field(description="the event types counted as clicks")
    sessions: int = Field(description="every session of the batch")
    fitted_sessions: int = Field(description="keyword sessions in the fit (not irrelevant, with a non-empty query)")
    payload_search_sessions: int = Field(description="left out: payload searches have no query")
    irrelevant_sessions: int = Field(description="left out: keyword sessions marked irrelevant")
    empty_query_sessions: int = Field(description="left out: keyword sessions whose query normalizes to ''")
    impressions: int
    clicks: int
    identified_positions: list[int]
    unidentified_positions: dict[str, str] = Field(description="position -> why the batch cannot identify theta")
    identifiability: str = Field(description="one line: the identified positions and why the others are not")
    converged: bool
    iterations: int
    distinct_queries: int = Field(description="normalized queries of the fit")
    kept_queries: int = Field(description="queries whose judgments the store keeps (top analytics_top_n)")
    judgments: int = Field(description="(query, object) pairs of the fit (every one is in the dataset)")
    kept_judgments: int
    fit: JsonObject = Field(description="the fit's summary (iterations, convergence, prior, ...)")
    computed_at: int | None = Field(None, description="when the kept fit was computed (ms)")


class BatchPropensities(BaseModel):
    """The kept examination curve of a released batch, with its fit's report."""

    batch_id: str
    report: LabelsReport
    propensities: list[Propensity]


class Judgment(BaseModel):
    """Raw CTR vs debiased relevance of one (normalized query, object) pair of a batch."""

    query: str = Field(description="the normalized query")
    object_id: str
    impressions: int
    clicks: int
    mean_position: float = Field(description="impression-weighted mean 1-based position")
    raw_ctr: float = Field(description="clicks / impressions")
    gamma: float | None = Field(
        description="debiased attractiveness: the CTR it would have at position 1; null when it was shown only "
        "at unidentified positions"
    )
    effective_sample_size: float = Field(description="expected examinations: sum of impressions x theta")


class JudgmentsPage(BaseModel):
    batch_id: str
    query: str | None = Field(description="the normalized query the page is restricted to, if any")
    judgments: list[Judgment] = Field(description="ordered by (query, object_id)")
    kept_queries: int = Field(description="queries whose judgments the store keeps for this batch")
    distinct_queries: int = Field(description="queries of the fit (the dataset's judgments table has them all)")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")
