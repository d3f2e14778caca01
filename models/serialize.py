"""Model versions: a fitted model as one JSON document that loads back to identical outputs.

The document holds the training table (so decompositions and ROI can be recomputed), the posterior
draws (all, or a seeded subset), the model spec, priors, lift tests, diagnostics, holdout, seed and
library versions. Floats are written with ``repr`` precision, so a round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from budgetloop.errors import InputError
from budgetloop.fileio import write_atomic
from models.data import MMMData
from models.diagnostics import Diagnostics
from models.fitted import FittedModel, Holdout
from models.lift import LiftTest
from models.model import ModelSpec
from models.priors import Priors

FORMAT = "budgetloop.mmm/1"


def to_dict(fm: FittedModel, *, max_draws: int | None = None, seed: int = 0) -> dict[str, Any]:
    n = fm.n_draws
    idx = np.arange(n)
    if max_draws is not None and max_draws < n:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_draws, replace=False))
    d = fm.data
    return {
        "format": FORMAT,
        "data": {
            "dates": [str(x)[:10] for x in d.dates],
            "y": d.y.tolist(),
            "spend": d.spend.tolist(),
            "controls": d.controls.tolist(),
            "channels": list(d.channels),
            "control_names": list(d.control_names),
            "frequency": d.frequency,
            "target": d.target,
            "source": d.source,
            "fingerprint": d.fingerprint(),
        },
        "spec": fm.spec.to_dict(),
        "priors": fm.priors.to_dict(),
        "draws": {k: np.asarray(v)[idx].tolist() for k, v in fm.draws.items()},
        "diagnostics": fm.diagnostics.to_dict(),
        "method": fm.method,
        "seed": fm.seed,
        "settings": fm.settings,
        "lift_tests": [t.to_dict() for t in fm.lift_tests],
        "holdout": fm.holdout.to_dict() if fm.holdout else None,
        "versions": fm.versions,
    }


def from_dict(doc: dict[str, Any], *, source: str = "<model>") -> FittedModel:
    if doc.get("format") != FORMAT:
        raise InputError(
            f"not a budgetloop model document (format {doc.get('format')!r})",
            file=source,
            key="format",
            fix=f"expected {FORMAT!r}: pass a file written by `FittedModel` save()",
        )
    dd = doc["data"]
    t = len(dd["dates"])
    data = MMMData(
        dates=np.array(dd["dates"], dtype="datetime64[D]"),
        y=np.asarray(dd["y"], dtype=float),
        spend=np.asarray(dd["spend"], dtype=float).reshape(t, len(dd["channels"])),
        controls=np.asarray(dd["controls"], dtype=float).reshape(t, len(dd["control_names"])),
        channels=tuple(dd["channels"]),
        control_names=tuple(dd["control_names"]),
        frequency=dd["frequency"],
        target=dd["target"],
        source=dd["source"],
    )
    if data.fingerprint() != dd["fingerprint"]:
        raise InputError(
            "the stored table does not match its fingerprint",
            file=source,
            key="data.fingerprint",
            fix="the file is corrupt",
        )
    h = doc.get("holdout")
    return FittedModel(
        data=data,
        spec=ModelSpec(**doc["spec"]),
        priors=Priors.from_dict(doc["priors"]),
        draws={k: np.asarray(v, dtype=float) for k, v in doc["draws"].items()},
        diagnostics=Diagnostics.from_dict(doc["diagnostics"]),
        method=doc["method"],
        seed=int(doc["seed"]),
        settings=dict(doc["settings"]),
        lift_tests=tuple(LiftTest.from_dict(x) for x in doc["lift_tests"]),
        holdout=Holdout(**h) if h else None,
        versions=dict(doc["versions"]),
    )


def dumps(fm: FittedModel, *, max_draws: int | None = None, seed: int = 0) -> str:
    return json.dumps(to_dict(fm, max_draws=max_draws, seed=seed))


def save(fm: FittedModel, path: str | Path, *, max_draws: int | None = None, seed: int = 0) -> None:
    write_atomic(path, dumps(fm, max_draws=max_draws, seed=seed))


def load(path: str | Path) -> FittedModel:
    p = Path(path)
    if not p.is_file():
        raise InputError("model file not found", file=str(path), fix="check the path")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path)) from None
    return from_dict(doc, source=str(path))
