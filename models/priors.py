"""Priors of the MMM, overridable per channel.

Media enter through an ROI parametrisation (as Meridian allows): each channel samples its ROI over the
fitted table (contribution / spend, in revenue per unit of spend) from a LogNormal, and its effect size
follows from it. The defaults are weakly informative and scaled to the data: the ROI median assumes
that media together drive ``media_share`` of revenue, split in proportion to spend.

Scaled units: spend is divided by its channel's mean non-zero spend, revenue by its mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from budgetloop.errors import InputError
from budgetloop.fileio import invalid_yaml, read_user_text, reject_duplicate_keys

#: A channel whose data removed less than this share of its ROI prior's variance (on the log scale,
#: :meth:`models.fitted.FittedModel.roi_prior_contraction`) has an ROI that mostly repeats its
#: prior: named in the warnings. On the recovery study's 20 weekly tables every channel's share is
#: 0.26 or more (median 0.71), 0.70 or more with one lift test per channel (median 0.92); on
#: Robyn's and Meridian's example tables 0.23 to 0.90. A channel spending $100 once in two years
#: against $100k of weekly revenue keeps 0.07.
ROI_CONTRACTION_MIN = 0.2


@dataclass(frozen=True)
class LogNormalPrior:
    """LogNormal(log(median), sigma)."""

    median: float
    sigma: float

    def __post_init__(self) -> None:
        if not (self.median > 0 and np.isfinite(self.median)):
            raise ValueError(f"`median` must be a positive number, got {self.median}")
        if not (self.sigma > 0 and np.isfinite(self.sigma)):
            raise ValueError(f"`sigma` must be a positive number, got {self.sigma}")

    @property
    def loc(self) -> float:
        return float(np.log(self.median))


@dataclass(frozen=True)
class BetaPrior:
    a: float
    b: float

    def __post_init__(self) -> None:
        if not (self.a > 0 and self.b > 0):
            raise ValueError(f"Beta prior needs `a` > 0 and `b` > 0, got a={self.a}, b={self.b}")


@dataclass(frozen=True)
class ChannelPrior:
    """Per-channel overrides; ``None`` keeps the default. ``half`` is in currency per period."""

    roi: LogNormalPrior | None = None
    decay: BetaPrior | None = None
    half: LogNormalPrior | None = None
    shape: LogNormalPrior | None = None


@dataclass(frozen=True)
class Priors:
    """Model-wide priors and per-channel overrides (by channel name).

    ``half_scaled`` is the default half-saturation prior in units of the channel's mean non-zero spend.
    """

    media_share: float = 0.25
    roi_sigma: float = 0.8
    decay_week: BetaPrior = BetaPrior(1.5, 3.0)
    decay_day: BetaPrior = BetaPrior(2.0, 2.0)
    half_scaled: LogNormalPrior = LogNormalPrior(1.3, 0.6)
    shape: LogNormalPrior = LogNormalPrior(1.4, 0.3)
    trend_sd: float = 0.3
    curvature_sd: float = 0.1
    season_sd: float = 0.15
    control_sd: float = 0.2
    noise_sd: float = 0.1
    channels: dict[str, ChannelPrior] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.media_share < 1:
            raise ValueError(f"`media_share` must lie in (0, 1), got {self.media_share}")
        for name in ("roi_sigma", "trend_sd", "curvature_sd", "season_sd", "control_sd", "noise_sd"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}")

    def with_channel(self, name: str, **kw: Any) -> Priors:
        """A copy with one channel's priors overridden: ``with_channel("tv", roi=LogNormalPrior(2, 0.3))``."""
        cur = self.channels.get(name, ChannelPrior())
        return replace(self, channels={**self.channels, name: replace(cur, **kw)})

    def check_channels(self, channels: tuple[str, ...], *, source: str | None = None) -> None:
        """Refuse priors for channels the table does not have; ``source``: the priors file, if any."""
        unknown = sorted(set(self.channels) - set(channels))
        if unknown:
            raise InputError(
                f"priors given for unknown channel(s) {unknown}",
                file=source,
                key=f"channels.{unknown[0]}",
                fix=f"use one of {list(channels)}",
            )

    def check_saturation(self, saturation: str, *, source: str | None = None) -> None:
        """Refuse a Hill shape prior, model-wide or for a channel, when the curve has no shape (the
        logistic one): it would be ignored while FIT.json echoed it. ``source``: the priors file."""
        if saturation == "hill":
            return
        paths = [f"channels.{name}.shape" for name, cp in self.channels.items() if cp.shape is not None]
        if self.shape != Priors.__dataclass_fields__["shape"].default:
            paths.insert(0, "shape")
        if paths:
            raise InputError(
                f"a Hill shape prior is given ({', '.join(paths)}), but {saturation} saturation has no shape",
                file=source,
                key=paths[0],
                fix=f"drop {' and '.join(paths)} from the priors, or fit with --saturation hill",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<priors>") -> Priors:
        """The inverse of :meth:`to_dict`; also reads any subset of it (see :func:`priors_from_document`)."""
        return priors_from_document(d, source=source)


@dataclass(frozen=True)
class ResolvedPriors:
    """Numeric prior parameters per channel, in the model's scaled units ([C] arrays)."""

    roi_loc: np.ndarray
    roi_scale: np.ndarray
    decay_a: np.ndarray
    decay_b: np.ndarray
    half_loc: np.ndarray
    half_scale: np.ndarray
    shape_loc: np.ndarray
    shape_scale: np.ndarray


def resolve(
    priors: Priors,
    *,
    channels: tuple[str, ...],
    frequency: str,
    y_total: float,
    spend_total: np.ndarray,
    spend_scale: np.ndarray,
) -> ResolvedPriors:
    """Per-channel prior parameters, defaults filled in from the data's own scale."""
    priors.check_channels(channels)
    c = len(channels)
    roi_default = priors.media_share * y_total / float(np.sum(spend_total))
    decay_default = priors.decay_day if frequency == "day" else priors.decay_week
    out: dict[str, list[float]] = {k: [] for k in ResolvedPriors.__dataclass_fields__}
    for j, name in enumerate(channels):
        cp = priors.channels.get(name, ChannelPrior())
        roi = cp.roi or LogNormalPrior(roi_default, priors.roi_sigma)
        decay = cp.decay or decay_default
        half = (
            LogNormalPrior(cp.half.median / spend_scale[j], cp.half.sigma) if cp.half else priors.half_scaled
        )
        shape = cp.shape or priors.shape
        out["roi_loc"].append(roi.loc)
        out["roi_scale"].append(roi.sigma)
        out["decay_a"].append(decay.a)
        out["decay_b"].append(decay.b)
        out["half_loc"].append(half.loc)
        out["half_scale"].append(half.sigma)
        out["shape_loc"].append(shape.loc)
        out["shape_scale"].append(shape.sigma)
    assert all(len(v) == c for v in out.values())
    return ResolvedPriors(**{k: np.asarray(v, dtype=float) for k, v in out.items()})


# --------------------------------------------------------------------------------------------------
# a priors file (``budgetloop fit --priors FILE``)

_SCALARS = ("media_share", "roi_sigma", "trend_sd", "curvature_sd", "season_sd", "control_sd", "noise_sd")
_LOGNORMAL = ("median", "sigma")
_BETA = ("a", "b")
#: per-channel keys and the fields of each (``half`` in currency per period, as ``ChannelPrior``)
_CHANNEL_KEYS = {"roi": _LOGNORMAL, "decay": _BETA, "half": _LOGNORMAL, "shape": _LOGNORMAL}
_MODEL_DISTS = {"decay_week": _BETA, "decay_day": _BETA, "half_scaled": _LOGNORMAL, "shape": _LOGNORMAL}


def priors_from_document(doc: Any, *, source: str) -> Priors:
    """Priors from a parsed YAML/JSON document: any subset of :class:`Priors`' fields (the rest keep
    their defaults) and ``channels: {name: {roi|decay|half|shape: {...}}}``. Every problem is an
    :class:`InputError` naming ``source`` and the key path, with the keys that are allowed there."""

    def fail(path: str, message: str, fix: str) -> InputError:
        return InputError(message, file=source, key=path, fix=fix)

    def number(path: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise fail(path, f"{v!r} is not a number", "give a finite number")
        return float(v)

    def fields(path: str, v: Any, names: tuple[str, ...]) -> dict[str, float]:
        if not isinstance(v, dict):
            raise fail(
                path,
                f"expected a mapping with keys {list(names)}, got {v!r}",
                f"write `{path}: {{{', '.join(f'{n}: ...' for n in names)}}}`",
            )
        unknown = sorted(set(map(str, v)) - set(names))
        missing = sorted(set(names) - set(map(str, v)))
        if unknown or missing:
            raise fail(
                path,
                f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}",
                f"give exactly {list(names)}",
            )
        return {n: number(f"{path}.{n}", v[n]) for n in names}

    def distribution(path: str, v: Any, names: tuple[str, ...]) -> Any:
        kind = BetaPrior if names == _BETA else LogNormalPrior
        try:
            return kind(**fields(path, v, names))
        except ValueError as e:
            raise fail(path, str(e), "see docs/model.md for the priors' meaning and ranges") from None

    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError(
            "a priors file must be a mapping of keys to values", file=source, fix="see docs/model.md"
        )
    allowed = (*_SCALARS, *_MODEL_DISTS, "channels")
    unknown = sorted(set(map(str, doc)) - set(allowed))
    if unknown:
        raise fail(unknown[0], "unknown key", f"use any of {list(allowed)}")
    kw: dict[str, Any] = {k: number(k, doc[k]) for k in _SCALARS if k in doc}
    kw.update({k: distribution(k, doc[k], names) for k, names in _MODEL_DISTS.items() if k in doc})
    channels: dict[str, ChannelPrior] = {}
    raw = doc.get("channels") or {}
    if not isinstance(raw, dict):
        raise fail(
            "channels", "expected a mapping of channel names", "write `channels: {search: {roi: ...}}`"
        )
    for name, spec in raw.items():
        path = f"channels.{name}"
        if not isinstance(spec, dict):
            raise fail(path, f"expected a mapping with any of {list(_CHANNEL_KEYS)}", "see docs/model.md")
        bad = sorted(set(map(str, spec)) - set(_CHANNEL_KEYS))
        if bad:
            raise fail(f"{path}.{bad[0]}", "unknown key", f"use any of {list(_CHANNEL_KEYS)}")
        # a key given as null keeps the default, as `to_dict` writes a channel's unset priors
        channels[str(name)] = ChannelPrior(
            **{
                k: distribution(f"{path}.{k}", spec[k], names)
                for k, names in _CHANNEL_KEYS.items()
                if spec.get(k) is not None
            }
        )
    try:
        return Priors(**kw, channels=channels)
    except ValueError as e:
        raise InputError(
            str(e), file=source, fix="see docs/model.md for the priors' meaning and ranges"
        ) from None


def load_priors(path: str | Path) -> Priors:
    """Read a priors file (YAML, of which JSON is a subset); see :func:`priors_from_document`."""
    import yaml

    p = Path(path)
    text = read_user_text(p, what="the priors file")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise invalid_yaml(e, source=str(p)) from None
    reject_duplicate_keys(text, source=str(p))
    return priors_from_document(doc, source=str(p))
