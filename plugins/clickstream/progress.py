"""Progress lines for long tasks: done / total, percentage, rate and time left, at most every few seconds.

No Airflow here: give it any logger (an operator passes its ``self.log``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Seconds between two progress lines (the final line is always logged).
DEFAULT_INTERVAL_S = 5.0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    return f"{value:,.0f}"


class Progress:
    """Logs ``<what>: <done> / <total> <unit> (<pct>%), <rate> <unit>/s, about <time> left``.

    :meth:`update` logs at most once every ``interval_s`` seconds; :meth:`done` logs the last line. With an
    unknown total (None) the line has the count and the rate only. A total that turns out too small (an
    estimate) is raised to the count reached, so the percentage never passes 100.

    :param logger: where the lines go (``info``).
    :param what: the line's prefix, e.g. ``extract batch b1 (0, 5000]``.
    :param total: the amount expected, or None when unknown.
    :param unit: ``sessions``, ``rows``, ``bytes`` (printed as KiB / MiB / GiB) ...
    :param interval_s: seconds between two lines at least.
    :param clock: monotonic seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        logger: Any,
        what: str,
        total: int | None,
        unit: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self.what = what
        self.total = total
        self.unit = unit
        self.interval_s = interval_s
        self.clock = clock
        self.started = self.last_logged = clock()
        self.count = 0
        self.lines = 0

    def update(self, count: int) -> None:
        """The amount done so far is ``count``; log it if the last line is ``interval_s`` old."""
        self.count = count
        now = self.clock()
        if now - self.last_logged >= self.interval_s:
            self._log(now, final=False)

    def done(self, count: int | None = None) -> None:
        """The work is over: log the final line (count, rate, elapsed time)."""
        if count is not None:
            self.count = count
        self._log(self.clock(), final=True)

    def line(self, now: float, *, final: bool) -> str:
        """The progress line at ``now``."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        unit = "" if self.unit == "bytes" else f" {self.unit}"
        rate_text = f"{_amount(rate, self.unit)}{'/s' if self.unit == 'bytes' else f' {self.unit}/s'}"
        if final:
            return f"{self.what}: done, {_amount(self.count, self.unit)}{unit} in {_duration(elapsed)} ({rate_text})"
        if self.total is None:
            return f"{self.what}: {_amount(self.count, self.unit)}{unit} so far, {rate_text}"
        total = max(self.total, self.count)
        share = 100.0 * self.count / total if total else 100.0
        left = f"about {_duration((total - self.count) / rate)} left" if rate > 0 else "time left unknown"
        return (
            f"{self.what}: {_amount(self.count, self.unit)} / {_amount(total, self.unit)}{unit} ({share:.1f}%), "
            f"{rate_text}, {left}"
        )

    def _log(self, now: float, *, final: bool) -> None:
        self.last_logged = now
        self.lines += 1
        self.log.info("%s", self.line(now, final=final))
