"""What a history import answers: its report, and the invalid rows it lists."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RowError(BaseModel):
    """An invalid row: where it is and why it was refused."""

    file: str
    line: int = Field(description="line (JSON Lines) or row number (Parquet), 1-based")
    reason: str


class ImportReport(BaseModel):
    """What an import did. When ``loaded`` is false nothing was written and the load counts are 0."""

    files: list[str]
    rows: int = Field(description="rows read (blank lines excluded)")
    session_rows: int = 0
    event_rows: int = 0
    loaded_sessions: int = Field(0, description="sessions registered by this import")
    loaded_events: int = Field(0, description="events stored by this import (embedded ones included)")
    duplicates: int = Field(0, description="duplicate_sessions + duplicate_events")
    duplicate_sessions: int = Field(0, description="session rows already registered with the same content")
    duplicate_events: int = Field(0, description="events whose (session_id, event_id) was already stored")
    purged: int = Field(
        0, description="events not stored: their session was in a batch retention purged (and is not registered)"
    )
    invalid: int = Field(0, description="invalid rows: unreadable, failing validation, or in conflict")
    invalid_share: float = 0.0
    invalid_threshold: float
    errors: list[RowError] = Field(default_factory=list, description="the first max_errors invalid rows")
    errors_truncated: bool = False
    loaded: bool
    batch_id: str | None = Field(None, description="collecting batch the new sessions went to")
