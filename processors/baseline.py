"""Learned baselines for per-minute metrics: robust rolling, then seasonal.

Before enough history exists the expectation is the median of the last
``window`` minutes with a MAD-based spread (robust to the spikes and gaps we
are looking for). Once ``seasonal_days`` days of history are known, the
expectation for a minute is the median of the same minute-of-day
(±``seasonal_slack`` minutes) over the past ``max_days`` days; once
``weekly_weeks`` weeks are known, of the same minute-of-week over the past
weeks (day-of-week). The spread is then the MAD of those values. State is
bounded and allocated once: ``window`` recent values (``roll``: normal minutes
only, so an outage never becomes the rolling baseline), and a ring of one value
per minute for the last ``max(max_days, 7 × weeks kept)`` days, each stamped
with its minute so a slot from another day is never mistaken for this one
(``record``: every minute, anomalies included). ``learn`` does both.
"""

from __future__ import annotations

import statistics
from array import array
from collections import deque
from typing import NamedTuple

MINUTE_MS = 60_000
DAY_MINUTES = 1440
WEEK_MINUTES = 7 * DAY_MINUTES
_EMPTY = -1  # stamp of a ring slot that holds nothing


class Expectation(NamedTuple):
    expected: float
    spread: float        # robust sigma: 1.4826 × MAD, floored by Poisson noise for counts
    model: str           # robust_rolling | seasonal_daily | seasonal_weekly | none
    history: int         # minutes of history behind it


class Baseline:
    def __init__(self, *, window: int = 30, seasonal_days: int = 2, weekly_weeks: int = 2,
                 max_days: int = 14, seasonal_slack: int = 5, counts: bool = True):
        self.window = window
        self.seasonal_days = seasonal_days
        self.weekly_weeks = weekly_weeks
        self.max_days = max_days
        self.weeks_kept = max_days // 7 + 1
        self.slack = seasonal_slack
        self.counts = counts
        self.recent: deque[float] = deque(maxlen=window)
        self.first_minute: int | None = None
        self.seen = 0
        self._ring_len = (max(max_days, 7 * self.weeks_kept) + 1) * DAY_MINUTES
        self._values: array[float] | None = None   # allocated on the first value
        self._stamps: array[int] | None = None

    def learn(self, minute_ms: int, value: float) -> None:
        """Both histories: the minute happened and was normal."""
        self.record(minute_ms, value)
        self.roll(value)

    def roll(self, value: float) -> None:
        """Into the rolling window only (e.g. a spike clipped to the fence)."""
        self.recent.append(value)

    def record(self, minute_ms: int, value: float) -> None:
        """Into the seasonal history only: every minute as it happened, anomalies included -
        a pattern that recurs daily is what the seasonal model must learn, even where the
        rolling model found it odd, and the median over days shrugs off a one-off outage."""
        minute = minute_ms // MINUTE_MS
        if self.first_minute is None:
            self.first_minute = minute
        self.seen += 1
        if self._values is None or self._stamps is None:
            self._values = array("d", bytes(8 * self._ring_len))
            self._stamps = array("q", [_EMPTY]) * self._ring_len
        i = minute % self._ring_len
        self._values[i] = value
        self._stamps[i] = minute

    def expect(self, minute_ms: int) -> Expectation:
        if not self.recent and self.seen == 0:
            return Expectation(0.0, 0.0, "none", 0)
        minute = minute_ms // MINUTE_MS
        span = minute - (self.first_minute if self.first_minute is not None else minute)
        if span >= self.weekly_weeks * WEEK_MINUTES:
            values, model = self._slot(minute, WEEK_MINUTES, self.weeks_kept), "seasonal_weekly"
        elif span >= self.seasonal_days * DAY_MINUTES:
            values, model = self._slot(minute, DAY_MINUTES, self.max_days), "seasonal_daily"
        else:
            values, model = [], "robust_rolling"
        if len(values) < 3:
            values, model = list(self.recent), "robust_rolling"
        if not values:  # nothing normal in the window yet (only breaches recorded)
            return Expectation(0.0, 0.0, "none", self.seen)
        expected = statistics.median(values)
        mad = statistics.median(abs(v - expected) for v in values)
        spread = 1.4826 * mad
        if self.counts:  # a count of mean m varies by ~sqrt(m) even when nothing is wrong
            spread = max(spread, expected ** 0.5, 1.0)
        return Expectation(expected, spread, model, self.seen)

    def _slot(self, minute: int, period: int, periods: int) -> list[float]:
        """Values learned at this minute of the period (±slack) in the last ``periods``
        periods, and in this period's minutes just before it."""
        values: list[float] = []
        stamps, ring = self._stamps, self._values
        if stamps is None or ring is None:
            return values
        n = self._ring_len
        for back in range(periods + 1):
            centre = minute - back * period
            for t in range(centre - self.slack, centre + self.slack + 1):
                if t < minute and stamps[t % n] == t:
                    values.append(ring[t % n])
        return values
