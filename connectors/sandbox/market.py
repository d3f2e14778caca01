"""The simulated market: day by day, what each platform delivered and what the business earned.

A :class:`Market` starts at the scenario's ``start`` with nothing simulated. :meth:`Market.advance_to`
simulates every day before a date with the budgets in force: generated ones during the history
(seasonal pushes, flights, pauses, drifts of about ``history_variation``), then, from the loop's first
day, whatever :meth:`Market.set_budget` was told. Revenue follows INTERFACES section 4 exactly, except
that the baseline is floored at 0 (a trend_per_year below about -1/years-simulated would otherwise
make revenue negative, which no store reports).

Randomness is a function of the scenario seed and the day only, never of the budgets: the revenue
noise ``e_d`` and each channel's delivery/CPM/CTR draws for day d are the same in every run, so a
counterfactual run (static budgets, the oracle allocation) shares the loop's luck. Channel draws are
keyed by the channel's name, so adding a channel to a scenario leaves the others' draws alone.

The arithmetic is vectorised over channels and regions; the loop over days is plain Python, which
simulates two years of twenty channels in well under a second.
"""

from __future__ import annotations

import math
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from connectors.sandbox.scenario import PLATFORMS, Scenario, hill

__all__ = [
    "GOOGLE_DAILY_OVERDELIVERY",
    "GOOGLE_MONTHLY_DAYS",
    "MAX_DELIVERY",
    "BudgetSet",
    "ChannelDay",
    "DayNotSimulated",
    "DayOutcome",
    "Market",
    "SimCampaign",
    "UnknownChannel",
]

GOOGLE_DAILY_OVERDELIVERY = 2.0  # a Google-like campaign may spend up to 2x its daily budget on a day
GOOGLE_MONTHLY_DAYS = 30.4  # ... but at most 30.4x its average daily budget over a calendar month
MAX_DELIVERY = {"google_ads": GOOGLE_DAILY_OVERDELIVERY, "meta_ads": 1.25, "retail_media": 1.0}

# Platform flavour: how often and how far each over-delivers, typical CPM and CTR, and how much its
# own attribution overstates the truth (last-touch / view-through style).
_OVER_PROB = {"google_ads": 0.12, "meta_ads": 0.15, "retail_media": 0.0}
_UNDER_FLOOR = {"google_ads": 0.93, "meta_ads": 0.92, "retail_media": 0.86}
_CPM = {"google_ads": 24.0, "meta_ads": 9.0, "retail_media": 6.5}
_CTR = {"google_ads": 0.03, "meta_ads": 0.009, "retail_media": 0.004}
_ATTRIBUTION_BIAS = {"google_ads": 1.5, "meta_ads": 1.3, "retail_media": 2.0}

_BLOCK = 128  # days of random draws generated at once
_STREAM_REVENUE, _STREAM_CHANNEL, _STREAM_HISTORY, _STREAM_STATIC, _STREAM_REGIONS = 1, 2, 3, 4, 5


class UnknownChannel(KeyError):
    def __init__(self, channel: str, known: list[str]) -> None:
        self.channel = channel
        super().__init__(channel)
        self._text = f"no channel `{channel}` in this market (channels: {', '.join(known)})"

    def __str__(self) -> str:
        return self._text


class DayNotSimulated(KeyError):
    def __init__(self, day: date, start: date, today: date) -> None:
        self.day = day
        super().__init__(day)
        self._text = (
            f"day {day.isoformat()} has not been simulated: the market covers {start.isoformat()} "
            f"up to (not including) {today.isoformat()}; call advance_to() past it first"
        )

    def __str__(self) -> str:
        return self._text


@dataclass(frozen=True)
class SimCampaign:
    channel: str
    platform: str
    account_id: str
    external_id: str
    name: str
    currency: str


@dataclass(frozen=True)
class ChannelDay:
    channel: str
    budget: float  # daily budget in force that day
    spend: float  # what the platform delivered (rounded to the cent)
    impressions: int
    clicks: int
    learning: bool
    media_revenue: float  # true contribution that day, incl. learning efficiency and shocks
    attributed_revenue: float  # what the platform would claim: biased, not the truth


@dataclass(frozen=True)
class DayOutcome:
    day: date
    channels: dict[str, ChannelDay]
    revenue: float  # total, incl. noise, rounded to the cent
    baseline: float
    regions: dict[str, float]  # revenue per region (incl. that region's noise)
    region_media: dict[str, float] = field(
        default_factory=dict
    )  # true media revenue per region (all channels)
    region_spend: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # spend delivered per region and channel (a region held out gets none)

    @property
    def media_revenue(self) -> float:
        return sum(c.media_revenue for c in self.channels.values())

    @property
    def spend(self) -> float:
        return sum(c.spend for c in self.channels.values())


@dataclass(frozen=True)
class BudgetSet:
    channel: str
    effective: date
    old: float
    new: float
    learning_started: bool


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _regional_deviation(expected: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Each region's noise beyond the national ``e_d``: its own standard normal less their average
    weighted by expected revenue, so the deviations cancel in the national sum and national revenue is
    exactly ``(baseline + media) x (1 + noise x e_d)`` (INTERFACES section 4), while each region
    carries noise of its own for geo experiments to read through. One region: none."""
    total = float(expected.sum())
    if len(u) < 2 or total <= 0:
        return np.zeros_like(u)
    return np.asarray(u - float(expected @ u) / total)


class Market:
    """A deterministic, stateful simulation of one scenario (thread-safe)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.channels: list[str] = scenario.channel_names
        self.regions: list[str] = [r.name for r in scenario.regions]
        self.first_loop_day: date = scenario.first_loop_day
        self._lock = threading.RLock()
        self._index = {name: i for i, name in enumerate(self.channels)}
        self._region_index = {name: i for i, name in enumerate(self.regions)}
        specs = scenario.channels
        self._platform = [c.platform for c in specs]
        self._decay = np.array([c.adstock.decay for c in specs])
        self._half = np.array([c.saturation.half for c in specs])
        self._shape = np.array([c.saturation.shape for c in specs])
        self._scale = np.array([c.scale for c in specs])
        self._efficiency = np.array([c.learning.efficiency for c in specs])
        self._threshold = np.array([c.learning.change_threshold for c in specs])
        self._learning_days = np.array([c.learning.days for c in specs], dtype=np.int64)
        self._ref_budget = np.array([c.daily_budget for c in specs])
        self._roi = np.array([c.roi_at_budget for c in specs])
        self._reach = np.array([[r.reach_of(c) for c in self.channels] for r in scenario.regions])
        self._baseline_share = np.array([r.baseline_share for r in scenario.regions])
        self._max_delivery = np.array([MAX_DELIVERY[p] for p in self._platform])
        self._over_prob = np.array([_OVER_PROB[p] for p in self._platform])
        self._under_floor = np.array([_UNDER_FLOOR[p] for p in self._platform])
        self._is_google = np.array([p == "google_ads" for p in self._platform])
        static = [
            np.random.default_rng([scenario.seed, _STREAM_STATIC, _name_key(n)]).standard_normal(3)
            for n in self.channels
        ]
        self._cpm = np.array(
            [_CPM[p] * math.exp(0.25 * z[0]) for p, z in zip(self._platform, static, strict=True)]
        )
        self._ctr = np.array(
            [_CTR[p] * math.exp(0.2 * z[1]) for p, z in zip(self._platform, static, strict=True)]
        )
        self._bias = np.array(
            [
                _ATTRIBUTION_BIAS[p] * math.exp(0.15 * z[2])
                for p, z in zip(self._platform, static, strict=True)
            ]
        )
        self.campaigns: list[SimCampaign] = self._make_campaigns()
        self._history = self._history_budgets()
        self._shock_schedule = sorted(
            (scenario.day_index(e.start), self._index[e.channel], e.factor) for e in scenario.shocks()
        )
        self._draw_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        n_c, n_r = len(self.channels), len(self.regions)
        self._t = 0  # index of today(): the first day not yet simulated
        self._budget = np.zeros(n_c)
        self._day_start_budget = np.zeros(n_c)
        self._learning_until = np.zeros(n_c, dtype=np.int64)
        self._geo = np.ones((n_r, n_c))
        self._forced = np.full(n_c, np.nan)
        self._shock = np.ones(n_c)
        self._shock_pos = 0
        self._adstock: np.ndarray | None = None
        self._month: tuple[int, int] | None = None
        self._month_spend = np.zeros(n_c)
        self._month_budget = np.zeros(n_c)
        self._month_days = 0
        # per simulated day, in order: budgets, spend, impressions, clicks, learning, media, attributed,
        # regional revenue, regional media, regional spend per channel (the baselines apart)
        self._rows: list[tuple[np.ndarray, ...]] = []
        self._baselines: list[float] = []
        self._begin_day(0)

    # ------------------------------------------------------------------------------------ public API

    def today(self) -> date:
        with self._lock:
            return self.scenario.start + timedelta(days=self._t)

    def advance_to(self, day: date) -> None:
        """Simulate every day before ``day`` with the budgets in force (no-op if already there)."""
        target = self.scenario.day_index(day)
        with self._lock:
            if target < self._t:
                raise ValueError(
                    f"the market cannot go backwards: today is {self.today().isoformat()}, asked to advance "
                    f"to {day.isoformat()}"
                )
            while self._t < target:
                self._simulate_day()
                self._t += 1
                self._begin_day(self._t)

    def outcome(self, day: date) -> DayOutcome:
        d = self.scenario.day_index(day)
        with self._lock:
            if not 0 <= d < self._t:
                raise DayNotSimulated(day, self.scenario.start, self.today())
            (
                budget,
                spend,
                impressions,
                clicks,
                learning,
                media,
                attributed,
                regional,
                regional_media,
                rspend,
            ) = self._rows[d]
            baseline = self._baselines[d]
        columns = zip(
            self.channels,
            budget.tolist(),
            spend.tolist(),
            impressions.astype(np.int64).tolist(),
            clicks.astype(np.int64).tolist(),
            learning.tolist(),
            media.tolist(),
            attributed.tolist(),
            strict=True,
        )
        channels = {row[0]: ChannelDay(*row) for row in columns}
        return DayOutcome(
            day=day,
            channels=channels,
            revenue=round(float(regional.sum()), 2),
            baseline=baseline,
            regions={name: round(float(regional[r]), 2) for r, name in enumerate(self.regions)},
            region_media={name: float(regional_media[r]) for r, name in enumerate(self.regions)},
            region_spend={
                name: {ch: round(float(rspend[r, i]), 2) for i, ch in enumerate(self.channels)}
                for r, name in enumerate(self.regions)
            },
        )

    def outcomes(self, start: date, end: date) -> list[DayOutcome]:
        """Every simulated day from ``start`` to ``end`` inclusive."""
        return [self.outcome(start + timedelta(days=k)) for k in range((end - start).days + 1)]

    def budget(self, channel: str) -> float:
        """The daily budget in force for :meth:`today`."""
        i = self._channel(channel)
        with self._lock:
            return float(self._budget[i])

    def budgets(self) -> dict[str, float]:
        with self._lock:
            return {name: float(self._budget[i]) for i, name in enumerate(self.channels)}

    def set_budget(self, channel: str, daily_budget: float) -> BudgetSet:
        """Change a channel's daily budget from :meth:`today` on.

        A change whose size relative to the old budget is above the channel's
        ``learning.change_threshold`` (strictly) starts a learning phase of ``learning.days`` days, today
        included. Several edits on one day are also compared with the budget the day began with, so
        splitting a large change into small ones does not dodge learning.
        """
        i = self._channel(channel)
        new = float(daily_budget)
        if not math.isfinite(new) or new < 0:
            raise ValueError(
                f"daily budget for `{channel}` must be a finite amount >= 0, got {daily_budget!r}"
            )
        new = round(new, 2)
        with self._lock:
            if self._t < self.scenario.history_days:
                raise ValueError(
                    f"budgets before the loop's first day ({self.first_loop_day.isoformat()}) are the "
                    f"scenario's generated history; today is {self.today().isoformat()}: advance_to() the "
                    "first loop day before setting budgets"
                )
            old = float(self._budget[i])
            started = self._crosses(i, old, new) or self._crosses(i, float(self._day_start_budget[i]), new)
            self._budget[i] = new
            if started:
                self._learning_until[i] = self._t + int(self._learning_days[i])
            return BudgetSet(
                channel=channel, effective=self.today(), old=old, new=new, learning_started=started
            )

    def learning_days_left(self, channel: str) -> int:
        """Days of learning left, today included (0 when not learning)."""
        i = self._channel(channel)
        with self._lock:
            return max(0, int(self._learning_until[i]) - self._t)

    def set_geo_factor(self, channel: str, region: str, factor: float) -> None:
        """Scale the channel's exposure in a region from :meth:`today` on (0.0 = holdout, 1.0 = normal)."""
        i = self._channel(channel)
        if region not in self._region_index:
            raise KeyError(f"no region `{region}` in this market (regions: {', '.join(self.regions)})")
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(f"geo factor must be a finite number >= 0, got {factor!r}")
        with self._lock:
            self._geo[self._region_index[region], i] = factor

    def geo_factor(self, channel: str, region: str) -> float:
        return float(self._geo[self._region_index[region], self._channel(channel)])

    def force_delivery(self, channel: str, factor: float | None) -> None:
        """Make the platform deliver ``factor`` x budget every day from today (``None``: back to normal).

        The platform's own limits still hold (Google-like: 2x a day and 30.4x a month; Meta-like: 1.25x;
        retail: 1x). For tests and injected faults.
        """
        i = self._channel(channel)
        if factor is not None and (not math.isfinite(factor) or factor < 0):
            raise ValueError(f"delivery factor must be a finite number >= 0, got {factor!r}")
        with self._lock:
            self._forced[i] = np.nan if factor is None else factor

    def campaign(self, channel: str) -> SimCampaign:
        return self.campaigns[self._channel(channel)]

    def history_budget(self, channel: str, day: date) -> float:
        """The generated budget of a history day (before :attr:`first_loop_day`)."""
        d = self.scenario.day_index(day)
        if not 0 <= d < self.scenario.history_days:
            raise ValueError(f"{day.isoformat()} is not a history day of scenario `{self.scenario.name}`")
        return float(self._history[d, self._channel(channel)])

    # ------------------------------------------------------------------------------------ internals

    def _channel(self, channel: str) -> int:
        try:
            return self._index[channel]
        except KeyError:
            raise UnknownChannel(channel, self.channels) from None

    def _crosses(self, i: int, old: float, new: float) -> bool:
        if old == new:
            return False
        if old <= 0:
            return True
        return abs(new - old) > float(self._threshold[i]) * old * (1.0 + 1e-12)

    def _begin_day(self, t: int) -> None:
        """Put in force the budgets of day ``t`` when they are generated (history and the first loop day)."""
        history_days = self.scenario.history_days
        if t <= history_days:
            new = self._history[t] if t < history_days else self._ref_budget.copy()
            if t > 0:
                for i in range(len(self.channels)):
                    if self._crosses(i, float(self._budget[i]), float(new[i])):
                        self._learning_until[i] = t + int(self._learning_days[i])
            self._budget = np.array(new, dtype=float)
        self._day_start_budget = self._budget.copy()
        while self._shock_pos < len(self._shock_schedule) and self._shock_schedule[self._shock_pos][0] <= t:
            _, c, factor = self._shock_schedule[self._shock_pos]
            self._shock[c] *= factor
            self._shock_pos += 1

    def _draws(self, t: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Day ``t``'s revenue noise ``e_d``, the regions' own deviations from it (one standard normal
        per region; unused with one region) and the channel draws (per draw kind x channel)."""
        block, k = divmod(t, _BLOCK)
        if block not in self._draw_cache:
            seed = self.scenario.seed
            revenue = np.random.default_rng([seed, _STREAM_REVENUE, block]).standard_normal(_BLOCK)
            regions = np.random.default_rng([seed, _STREAM_REGIONS, block]).standard_normal(
                (_BLOCK, len(self.regions))
            )
            channel = np.stack([self._channel_block(seed, block, n) for n in self.channels], axis=2)
            self._draw_cache = {block: (revenue, regions, channel)}
        revenue, regions, channel = self._draw_cache[block]
        return float(revenue[k]), regions[k], channel[k]

    @staticmethod
    def _channel_block(seed: int, block: int, name: str) -> np.ndarray:
        """A block of one channel's draws: two uniforms (delivery) then four standard normals."""
        rng = np.random.default_rng([seed, _STREAM_CHANNEL, block, _name_key(name)])
        return np.concatenate([rng.random((_BLOCK, 2)), rng.standard_normal((_BLOCK, 4))], axis=1)

    def _deliver(self, t: int, day: date, u: np.ndarray) -> np.ndarray:
        budget = self._budget
        factor = self._under_floor + (1.0 - self._under_floor) * u[0]
        over = u[1] < self._over_prob
        safe_prob = np.where(self._over_prob > 0, self._over_prob, 1.0)
        factor = np.where(over, 1.0 + (self._max_delivery - 1.0) * (u[1] / safe_prob), factor)
        factor = np.where(np.isnan(self._forced), factor, self._forced)
        factor = np.minimum(factor, self._max_delivery)
        spend = np.round(budget * factor, 2)
        month = (day.year, day.month)
        if month != self._month:
            self._month = month
            self._month_spend[:] = 0.0
            self._month_budget[:] = 0.0
            self._month_days = 0
        self._month_budget += budget
        self._month_days += 1
        allowance = GOOGLE_MONTHLY_DAYS * self._month_budget / self._month_days - self._month_spend
        capped = np.floor(np.maximum(allowance, 0.0) * 100.0) / 100.0
        spend = np.asarray(np.where(self._is_google, np.minimum(spend, capped), spend), dtype=float)
        self._month_spend += spend
        return spend

    def _simulate_day(self) -> None:
        t = self._t
        day = self.scenario.start + timedelta(days=t)
        e, u_regions, u = self._draws(t)
        spend = self._deliver(t, day, u)

        regional_spend = spend[None, :] * self._reach * self._geo
        if self._adstock is None:
            self._adstock = regional_spend.copy()  # a(-1) = the first day's spend
        self._adstock = (1.0 - self._decay) * regional_spend + self._decay * self._adstock
        per_reach = np.divide(
            self._adstock, self._reach, out=np.zeros_like(self._adstock), where=self._reach > 0
        )
        learning = self._learning_until > t
        multiplier = self._scale * self._shock * np.where(learning, self._efficiency, 1.0)
        regional_media = self._reach * multiplier * hill(per_reach, self._half, self._shape)
        media = regional_media.sum(axis=0)

        baseline = max(0.0, self.scenario.baseline.at(t, day.weekday()))
        expected = baseline * self._baseline_share + regional_media.sum(axis=1)
        regional = expected * (1.0 + self.scenario.noise * (e + _regional_deviation(expected, u_regions)))

        ratio = np.maximum(spend, 1e-9) / self._ref_budget
        cpm = self._cpm * ratio**0.12 * np.exp(0.08 * u[2])
        impressions = np.floor(spend / cpm * 1000.0)
        ctr = np.minimum(self._ctr * ratio**-0.08 * np.exp(0.1 * u[3]), 0.5)
        clicks = np.floor(impressions * ctr)
        claimed = self._bias * (0.5 * media + 0.5 * self._roi * spend) * np.exp(0.1 * u[4])
        attributed = np.round(claimed, 2)

        self._rows.append(
            (
                self._budget.copy(),
                spend,
                impressions,
                clicks,
                learning,
                media,
                attributed,
                regional,
                regional_media.sum(axis=1),
                regional_spend,
            )
        )
        self._baselines.append(baseline)

    def _make_campaigns(self) -> list[SimCampaign]:
        rng = np.random.default_rng([self.scenario.seed, _STREAM_STATIC])
        google_customer = f"{rng.integers(100, 999)}-{rng.integers(100, 999)}-{rng.integers(1000, 9999)}"
        meta_account = f"act_{rng.integers(10**14, 10**15)}"
        retail_entity = f"ENTITY{rng.integers(10**11, 10**12)}"
        accounts = {"google_ads": google_customer, "meta_ads": meta_account, "retail_media": retail_entity}
        campaigns = []
        for name, platform in zip(self.channels, self._platform, strict=True):
            crc = _name_key(name)
            if platform == "google_ads":
                external = str(10_000_000_000 + (crc * 7919 + self.scenario.seed) % 89_999_999_999)
            elif platform == "meta_ads":
                external = str(120_200_000_000_000_000 + (crc * 104729 + self.scenario.seed) % 10**15)
            else:
                external = str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"budgetloop-sandbox:{self.scenario.seed}:{name}")
                )
            campaigns.append(
                SimCampaign(
                    channel=name,
                    platform=platform,
                    account_id=accounts[platform],
                    external_id=external,
                    name=f"{self.scenario.name} | {name}",
                    currency=self.scenario.currency,
                )
            )
        assert {c.platform for c in campaigns} <= set(PLATFORMS)
        return campaigns

    def _history_budgets(self) -> np.ndarray:
        """History budgets (history_days x channels): drifts, seasonal pushes, flights and pauses.

        The last weeks settle on each channel's ``daily_budget``, the budget of the loop's first day.
        """
        s = self.scenario
        h = s.history_days
        out = np.zeros((h, len(self.channels)))
        if h == 0:
            return out
        hv = s.history_variation
        settle = min(28, h // 4)
        ramp = min(28, h // 4)
        active_end = h - settle - ramp  # flights and pauses only before this day
        days = np.arange(h)
        taper = np.clip((h - settle - days) / max(ramp, 1), 0.0, 1.0)
        for c, spec in enumerate(s.channels):
            rng = np.random.default_rng([s.seed, _STREAM_HISTORY, _name_key(spec.name)])
            weeks = h // 7 + 2
            rho = 0.8
            shocks = rng.standard_normal(weeks)
            walk = np.zeros(weeks)
            walk[0] = shocks[0]
            for w in range(1, weeks):
                walk[w] = rho * walk[w - 1] + math.sqrt(1 - rho * rho) * shocks[w]
            drift = 0.6 * hv * walk[days // 7]
            phase = rng.uniform(0, 2 * math.pi)
            push = hv * rng.uniform(0.3, 0.8) * np.sin(2 * math.pi * (days // 7) * 7 / 365.25 + phase)
            season = 1.0 + s.baseline.yearly_amplitude * np.sin(2.0 * math.pi * days / 365.25)
            follow = spec.follows_season * np.log(np.maximum(season, 1e-6))
            log_dev = (drift + push + follow) * taper
            level = spec.daily_budget * np.exp(log_dev)
            if hv > 0 and active_end > 21:
                for _ in range(int(rng.integers(1, 4))):  # flights: a few weeks at a clearly higher budget
                    length = int(rng.integers(14, 36))
                    begin = int(rng.integers(0, max(1, active_end - length)))
                    level[begin : begin + length] *= math.exp(hv * rng.uniform(0.8, 1.6))
                for _ in range(int(rng.integers(0, 3))):  # pauses: the campaign switched off for days
                    length = int(rng.integers(3, 13))
                    begin = int(rng.integers(0, max(1, active_end - length)))
                    level[begin : begin + length] = 0.0
            out[:, c] = np.round(level, 2)
        return out
