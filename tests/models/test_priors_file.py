"""`budgetloop fit --priors FILE`: a YAML priors file, checked key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetloop.errors import InputError
from models.priors import BetaPrior, LogNormalPrior, Priors, load_priors


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "priors.yaml"
    p.write_text(text)
    return p


def test_a_partial_file_overrides_what_it_names_and_keeps_the_defaults(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
media_share: 0.05
season_sd: 0.3
shape: {median: 1.0, sigma: 0.2}
channels:
  search:
    roi: {median: 2.5, sigma: 0.3}
    decay: {a: 2, b: 8}
  tv:
    half: {median: 40000, sigma: 0.5}
""",
    )
    pr = load_priors(p)
    assert pr.media_share == 0.05 and pr.season_sd == 0.3 and pr.shape == LogNormalPrior(1.0, 0.2)
    assert pr.roi_sigma == Priors().roi_sigma and pr.decay_week == Priors().decay_week
    assert pr.channels["search"].roi == LogNormalPrior(2.5, 0.3)
    assert pr.channels["search"].decay == BetaPrior(2.0, 8.0)
    assert pr.channels["search"].half is None
    assert pr.channels["tv"].half == LogNormalPrior(40000.0, 0.5)


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_priors(write(tmp_path, "")) == Priors()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("media_shares: 0.1\n", "`media_shares`"),
        ("media_share: 1.5\n", "media_share"),
        ("noise_sd: lots\n", "`noise_sd`"),
        ("channels:\n  search:\n    roi: {median: -2, sigma: 0.3}\n", "`channels.search.roi`"),
        ("channels:\n  search:\n    roi: {median: 2}\n", "`channels.search.roi`"),
        ("channels:\n  search:\n    slope: {median: 2, sigma: 1}\n", "`channels.search.slope`"),
        ("decay_week: {a: 0, b: 2}\n", "`decay_week`"),
        ("channels: [search]\n", "`channels`"),
        ("- 1\n- 2\n", "mapping"),
        ("media_share: [0.1\n", "line"),
        # YAML kept the last silently: a second `search` replaced the first's ROI prior
        (
            "channels:\n  search:\n    roi: {median: 2, sigma: 0.3}\n  search:\n    decay: {a: 2, b: 2}\n",
            "`channels.search`: duplicate key at line 4 (first given on line 2)",
        ),
    ],
)
def test_every_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_priors(p)
    assert str(p) in str(e.value) and named in str(e.value), str(e.value)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_priors(tmp_path / "nope.yaml")


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"media_share: 0.2\n# r\xe9sum\xe9\n")
    with pytest.raises(InputError, match="cannot read the priors file: it is not UTF-8 text"):
        load_priors(p)


def test_the_example_priors_file_loads() -> None:
    pr = load_priors(Path(__file__).resolve().parents[2] / "examples" / "priors.yaml")
    assert pr.channels["search"].roi == LogNormalPrior(2.4, 0.3) and pr.channels["tv"].half is not None


def test_a_file_that_is_not_yaml_names_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "media_share: 0.05\nchannels:\n  search: {roi: {median: 2, sigma: 0.3}\n")
    with pytest.raises(InputError, match=r"invalid YAML at line \d+, column \d+") as e:
        load_priors(p)
    assert e.value.file == str(p) and e.value.fix == "fix the YAML syntax"
