"""Learned baselines for per-minute metrics: robust rolling, then seasonal.

Before enough history exists the expectation is the median of the last
``window`` minutes with a MAD-based spread (robust to the spikes and gaps we
are looking for). Once ``seasonal_days`` full days are known, the expectation
for a minute is the median of the same minute-of-day (±``seasonal_slack``)
over past days, scaled by the recent level; day-of-week is used once
``weekly_weeks`` weeks are known. State is bounded: ``window`` values and at
most ``max_days`` per minute-of-day slot.
"""

from __future__ import annotations

import statistics
from collections import deque
from typing import NamedTuple

MINUTE_MS = 60_000
DAY_MINUTES = 1440
WEEK_MINUTES = 7 * DAY_MINUTES


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
        self.slack = seasonal_slack
        self.counts = counts
        self.recent: deque[float] = deque(maxlen=window)
        self.by_minute_of_day: dict[int, deque[float]] = {}
        self.by_minute_of_week: dict[int, deque[float]] = {}
        self.first_minute: int | None = None
        self.seen = 0

    def learn(self, minute_ms: int, value: float) -> None:
        minute = minute_ms // MINUTE_MS
        if self.first_minute is None:
            self.first_minute = minute
        self.seen += 1
        self.recent.append(value)
        self.by_minute_of_day.setdefault(minute % DAY_MINUTES, deque(maxlen=self.max_days)).append(value)
        self.by_minute_of_week.setdefault(minute % WEEK_MINUTES, deque(maxlen=self.max_days // 7 + 1)) \
            .append(value)

    def expect(self, minute_ms: int) -> Expectation:
        if not self.recent:
            return Expectation(0.0, 0.0, "none", 0)
        minute = minute_ms // MINUTE_MS
        span = minute - (self.first_minute if self.first_minute is not None else minute)
        rolling = statistics.median(self.recent)
        if span >= self.weekly_weeks * WEEK_MINUTES:
            values = self._slot(self.by_minute_of_week, minute % WEEK_MINUTES, WEEK_MINUTES)
            model = "seasonal_weekly"
        elif span >= self.seasonal_days * DAY_MINUTES:
            values = self._slot(self.by_minute_of_day, minute % DAY_MINUTES, DAY_MINUTES)
            model = "seasonal_daily"
        else:
            values, model = list(self.recent), "robust_rolling"
        if len(values) < 3:
            values, model = list(self.recent), "robust_rolling"
        expected = statistics.median(values) if model != "robust_rolling" else rolling
        mad = statistics.median(abs(v - expected) for v in values)
        spread = 1.4826 * mad
        if self.counts:  # a count of mean m varies by ~sqrt(m) even when nothing is wrong
            spread = max(spread, expected ** 0.5, 1.0)
        return Expectation(expected, spread, model, self.seen)

    def _slot(self, table: dict[int, deque[float]], slot: int, period: int) -> list[float]:
        values: list[float] = []
        for offset in range(-self.slack, self.slack + 1):
            values.extend(table.get((slot + offset) % period, ()))
        return values
