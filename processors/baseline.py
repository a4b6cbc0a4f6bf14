"""Learned baselines for per-bucket metrics (a bucket: a minute, an hour or a day of
event time): robust rolling, then seasonal.

Before enough history exists the expectation is the median of the last
``window`` buckets with a MAD-based spread (robust to the spikes and gaps we
are looking for). Once ``seasonal_days`` days of history are known, the
expectation for a bucket is the median of the same bucket-of-day
(±``seasonal_slack`` buckets) over the past ``max_days`` days; once
``weekly_weeks`` weeks are known, of the same bucket-of-week over the past
weeks (day-of-week). The spread is then the MAD of those values. A day-sized
bucket has no day-of-day: ``daily=False`` goes from rolling straight to weekly.
State is bounded and allocated once: ``window`` recent values (``roll``: normal
buckets only, so an outage never becomes the rolling baseline), and a ring of
one value per bucket for the last ``max(max_days, 7 × weeks kept)`` days, each
stamped with its bucket so a slot from another day is never mistaken for this
one (``record``; the detectors leave out the buckets inside an open alert or an
exclusion window, so an incident never trains it). ``learn`` does both.
"""

from __future__ import annotations

import statistics
from array import array
from collections import deque
from typing import NamedTuple

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
DAY_MINUTES = 1440
WEEK_MINUTES = 7 * DAY_MINUTES
_EMPTY = -1  # stamp of a ring slot that holds nothing


class Expectation(NamedTuple):
    expected: float
    spread: float        # robust sigma: 1.4826 × MAD, floored by Poisson noise for counts
    model: str           # robust_rolling | seasonal_daily | seasonal_weekly | none
    history: int         # buckets of history behind it


class Baseline:
    def __init__(self, *, window: int = 30, seasonal_days: int = 2, weekly_weeks: int = 2,
                 max_days: int = 14, seasonal_slack: int = 5, counts: bool = True,
                 unit_ms: int = MINUTE_MS, daily: bool = True):
        self.unit_ms = unit_ms
        self.day_units = DAY_MS // unit_ms
        self.week_units = 7 * self.day_units
        self.daily = daily
        self.window = window
        self.seasonal_days = seasonal_days
        self.weekly_weeks = weekly_weeks
        self.max_days = max_days
        self.weeks_kept = max_days // 7 + 1
        self.slack = seasonal_slack
        self.counts = counts
        self.recent: deque[float] = deque(maxlen=window)
        self.first_bucket: int | None = None
        self.seen = 0
        self._ring_len = (max(max_days, 7 * self.weeks_kept) + 1) * self.day_units
        self._values: array[float] | None = None   # allocated on the first value
        self._stamps: array[int] | None = None

    def learn(self, bucket_ms: int, value: float) -> None:
        """Both histories: the bucket happened and was normal."""
        self.record(bucket_ms, value)
        self.roll(value)

    def roll(self, value: float) -> None:
        """Into the rolling window only (e.g. a spike clipped to the fence)."""
        self.recent.append(value)

    def record(self, bucket_ms: int, value: float) -> None:
        """Into the seasonal history only: a bucket as it happened, even where the rolling
        model found it odd (a pattern that recurs daily is what the seasonal model must
        learn; the median over days shrugs off a one-off burst)."""
        bucket = bucket_ms // self.unit_ms
        if self.first_bucket is None:
            self.first_bucket = bucket
        self.seen += 1
        if self._values is None or self._stamps is None:
            self._values = array("d", bytes(8 * self._ring_len))
            self._stamps = array("q", [_EMPTY]) * self._ring_len
        i = bucket % self._ring_len
        self._values[i] = value
        self._stamps[i] = bucket

    def expect(self, bucket_ms: int) -> Expectation:
        if not self.recent and self.seen == 0:
            return Expectation(0.0, 0.0, "none", 0)
        bucket = bucket_ms // self.unit_ms
        span = bucket - (self.first_bucket if self.first_bucket is not None else bucket)
        values: list[float] = []
        model = "robust_rolling"
        if span >= self.weekly_weeks * self.week_units:
            # two of the same bucket of the week say more than many of the day
            weekly = self._slot(bucket, self.week_units, self.weeks_kept)
            if len(weekly) >= 2:
                values, model = weekly, "seasonal_weekly"
        if not values and self.daily and span >= self.seasonal_days * self.day_units:
            # (or too few weeks behind this bucket of the week: an excluded or incident week)
            daily = self._slot(bucket, self.day_units, self.max_days)
            if len(daily) >= 3:
                values, model = daily, "seasonal_daily"
        if not values:
            values, model = list(self.recent), "robust_rolling"
        if not values:  # nothing normal in the window yet (only breaches recorded)
            return Expectation(0.0, 0.0, "none", self.seen)
        expected = statistics.median(values)
        mad = statistics.median(abs(v - expected) for v in values)
        spread = 1.4826 * mad
        if self.counts:  # a count of mean m varies by ~sqrt(m) even when nothing is wrong
            spread = max(spread, expected ** 0.5, 1.0)
        return Expectation(expected, spread, model, self.seen)

    def _slot(self, bucket: int, period: int, periods: int) -> list[float]:
        """Values learned at this bucket of the period (±slack) in the last ``periods``
        periods, and in this period's buckets just before it."""
        values: list[float] = []
        stamps, ring = self._stamps, self._values
        if stamps is None or ring is None:
            return values
        n = self._ring_len
        for back in range(periods + 1):
            centre = bucket - back * period
            lo, hi = centre - self.slack, min(centre + self.slack + 1, bucket)
            while lo < hi:   # contiguous runs of the ring (one, unless the window wraps)
                i = lo % n
                run = min(hi - lo, n - i)
                values += [v for t, stamp, v in zip(range(lo, lo + run), stamps[i:i + run], ring[i:i + run],
                                                    strict=True) if stamp == t]
                lo += run
        return values
