"""`budgetloop fit`: bad input exits 2 naming file, row and column, and writes nothing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from budgetloop.cli import main
from budgetloop.errors import InputError
from models.fitted import FittedModel
from models.simulate import simulate


def _write_table(path: Path, periods: int = 40) -> Path:
    data, _ = simulate(periods=periods, channels=2, seed=5)
    df = pd.DataFrame(
        {
            "date": [str(d)[:10] for d in data.dates],
            "revenue": np.round(data.y, 2),
            "tv": data.spend[:, 0],
            "search": data.spend[:, 1],
            "price": np.linspace(9, 11, periods).round(2),
        }
    )
    df.to_csv(path, index=False)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0), capsys.readouterr().err


def _edit(path: Path, row: int, col: str, value: str) -> None:
    df = pd.read_csv(path, dtype=str)
    df.loc[row, col] = value
    df.to_csv(path, index=False)


BASE = ["--target", "revenue", "--date", "date", "--channels", "tv,search"]


@pytest.mark.parametrize(
    ("edit", "extra", "expected"),
    [
        (None, ["--target", "sales"], "`sales`: column not found"),
        (None, ["--channels", "tv,radio"], "`radio`: column not found"),
        (("tv", 6, "-3"), [], "row 8, `tv`: negative value -3"),
        (("search", 2, "lots"), [], "row 4, `search`: value 'lots' is not a number"),
        (("date", 5, "__prev__"), [], "row 7, `date`: duplicate date"),
        (("date", 5, "__skip__"), [], "row 7, `date`: date gap"),
    ],
)
def test_bad_input_exits_2_names_the_place_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: tuple[str, int, str] | None,
    extra: list[str],
    expected: str,
) -> None:
    table = _write_table(tmp_path / "data.csv")
    if edit is not None:
        col, row, value = edit
        df = pd.read_csv(table, dtype=str)
        if value == "__prev__":
            value = df.loc[row - 1, col]
        elif value == "__skip__":
            value = str((pd.Timestamp(df.loc[row, col]) + pd.Timedelta(days=7)).date())
            df.loc[row:, col] = [
                str((pd.Timestamp(v) + pd.Timedelta(days=7)).date()) for v in df.loc[row:, col]
            ]
        df.loc[row, col] = value
        df.to_csv(table, index=False)
    out = tmp_path / "FIT.json"
    args = [*BASE]
    for i in range(0, len(extra), 2):
        args[args.index(extra[i]) + 1] = extra[i + 1]
    code, err = _run(["fit", str(table), *args, "--out", str(out), "--quiet"], capsys)
    assert code == 2, err
    assert expected in err and str(table) in err
    assert "Traceback" not in err
    assert not out.exists()


def test_unknown_lift_test_channel_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _write_table(tmp_path / "data.csv")
    lift = tmp_path / "lift.csv"
    lift.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "radio,2023-03-06,2023-03-27,-1000,1500,200\n"
    )
    out = tmp_path / "FIT.json"
    code, err = _run(
        ["fit", str(table), *BASE, "--lift-tests", str(lift), "--out", str(out), "--quiet"], capsys
    )
    assert code == 2 and f"{lift}, row 2, `channel`: unknown channel `radio`" in err
    assert not out.exists()


def test_fit_writes_fit_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _write_table(tmp_path / "data.csv")
    out = tmp_path / "FIT.json"
    argv = [
        "fit",
        str(table),
        *BASE,
        "--controls",
        "price",
        "--out",
        str(out),
        "--plots",
        str(tmp_path / "plots"),
    ]
    argv += ["--chains", "1", "--warmup", "150", "--samples", "100", "--holdout", "4", "--allow-unhealthy"]
    old_umask = os.umask(0o022)
    try:
        code, err = _run(argv, capsys)
    finally:
        os.umask(old_umask)
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # as a plain open() makes it, not mkstemp's 0o600
    doc = json.loads(out.read_text())
    assert set(doc["channels"]) == {"tv", "search"}
    assert doc["channels"]["tv"]["roi"]["p05"] <= doc["channels"]["tv"]["roi"]["p95"]
    assert doc["model"]["controls"] == ["price"]
    for name in ("curves", "decomposition", "fit"):
        assert Path(doc["plots"][name]).stat().st_size > 1000
    assert "ROI" in err
    # the holdout refit's progress starts over, and a line says why
    assert (
        "holdout: refitting without the last 4 weeks to predict them" in err
        and doc["holdout"]["periods"] == 4
    )


def test_saturation_flag_chooses_the_curve_and_a_wrong_one_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tmp_path / "data.csv")
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "100", "--samples", "50", "--holdout", "0", "--allow-unhealthy"]
    code, err = _run(
        ["fit", str(table), *BASE, "--out", str(out), "--saturation", "logistic", *quick], capsys
    )
    assert code == 0, err
    assert "logistic saturation" in err
    doc = json.loads(out.read_text())
    assert doc["curves"]["saturation"] == "logistic" and doc["model"]["spec"]["saturation"] == "logistic"
    out.unlink()
    code, err = _run(
        ["fit", str(table), *BASE, "--out", str(out), "--saturation", "s-curve", "--quiet"], capsys
    )
    assert code == 2 and "`--saturation`" in err and "hill" in err and "logistic" in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_an_unwritable_out_is_refused_before_the_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import models.fit

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit ran before --out was checked")

    monkeypatch.setattr(models.fit, "fit", no_fit)
    table = _write_table(tmp_path / "data.csv")
    (tmp_path / "plain").write_text("a file")
    out = tmp_path / "outdir" if where == "folder" else tmp_path / "plain" / "FIT.json"
    if where == "folder":
        out.mkdir()
    code, err = _run(["fit", str(table), *BASE, "--out", str(out), "--quiet"], capsys)
    assert code == 2, err
    assert "`--out`" in err and str(out) in err and "Traceback" not in err
    if where == "folder":
        assert list(out.iterdir()) == []  # nothing written into it


def test_a_bad_holdout_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _write_table(tmp_path / "data.csv")  # 40 rows: at most 13 held out
    out = tmp_path / "FIT.json"
    for value in ("20", "-1"):
        code, err = _run(["fit", str(table), *BASE, "--holdout", value, "--out", str(out), "--quiet"], capsys)
        assert code == 2, err
        assert "`--holdout`" in err and "holdout_periods" not in err and "between 1 and 13" in err
        assert not out.exists()


def test_a_priors_file_moves_the_fit_and_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An analyst's ROI prior for one channel (say from a past experiment) reaches the fit: with a
    tight prior far from what the table says, the posterior sits at the prior, and FIT.json records
    the priors it used."""
    table = _write_table(tmp_path / "data.csv")
    priors = tmp_path / "priors.yaml"
    priors.write_text(
        "half_scaled: {median: 2.0, sigma: 0.4}\nchannels:\n  tv:\n    roi: {median: 0.3, sigma: 0.02}\n"
    )
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "150", "--samples", "100", "--holdout", "0", "--allow-unhealthy"]
    argv = ["fit", str(table), *BASE, "--priors", str(priors), "--adstock", "delayed", "--out", str(out)]
    code, err = _run([*argv, *quick], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["channels"]["tv"]["roi"]["median"] == pytest.approx(0.3, rel=0.08)
    assert doc["model"]["priors"]["channels"]["tv"]["roi"] == {"median": 0.3, "sigma": 0.02}
    # and what the priors came to on this table, defaults filled in: the ROI the media share implies,
    # the half-saturation in currency (2 x the mean spend where the channel spent)
    df = pd.read_csv(table)
    used = doc["model"]["priors_by_channel"]
    assert used["tv"]["roi"] == {"median": pytest.approx(0.3), "sigma": pytest.approx(0.02)}
    default_roi = 0.25 * df["revenue"].sum() / (df["tv"].sum() + df["search"].sum())
    assert used["search"]["roi"] == {"median": pytest.approx(default_roi), "sigma": pytest.approx(0.8)}
    spent = df["search"][df["search"] > 0].mean()
    assert used["search"]["half"] == {"median": pytest.approx(2.0 * spent), "sigma": pytest.approx(0.4)}
    assert used["search"]["decay"] == {"a": 1.5, "b": 3.0}
    assert set(used["search"]["shape"]) == {"median", "sigma"} and used["tv"]["delay"] == {"scale": 1.0}
    # delayed adstock reports the lag at which each channel's effect peaks
    assert set(doc["curves"]["parameters"]["tv"]) == {"beta", "half", "shape", "decay", "delay"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("channels:\n  radio:\n    roi: {median: 2, sigma: 0.5}\n", "`channels.radio`"),
        ("channels:\n  tv:\n    roi: {median: 2}\n", "`channels.tv.roi`"),
        ("roi_sigma: -1\n", "roi_sigma"),
    ],
)
def test_a_bad_priors_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    table = _write_table(tmp_path / "data.csv")
    priors = tmp_path / "priors.yaml"
    priors.write_text(text)
    out = tmp_path / "FIT.json"
    code, err = _run(
        ["fit", str(table), *BASE, "--priors", str(priors), "--out", str(out), "--quiet"], capsys
    )
    assert code == 2, err
    assert str(priors) in err and named in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_short_table_fits_without_the_default_holdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Eight rows: a default holdout of two would leave the refit six, under the eight a model needs,
    so the default is no holdout (said on stderr), and an explicit one is refused before fitting."""
    table = _write_table(tmp_path / "data.csv", periods=8)
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "50", "--samples", "20", "--allow-unhealthy"]
    code, err = _run(["fit", str(table), *BASE, "--out", str(out), *quick], capsys)
    assert code == 0, err
    assert "no holdout" in err
    doc = json.loads(out.read_text())
    assert doc.get("holdout") is None
    # FIT.json says why, and --quiet still prints it (a reviewer's script found a silent null)
    assert any(w.startswith("no holdout: the table's 8 rows leave none") for w in doc["warnings"])
    out.unlink()
    code, err = _run(["fit", str(table), *BASE, "--out", str(out), *quick, "--quiet"], capsys)
    assert code == 0 and "note: no holdout: the table's 8 rows" in err, err
    out.unlink()
    code, err = _run(["fit", str(table), *BASE, "--holdout", "2", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "`--holdout`" in err and "use 0" in err, err
    assert not out.exists()


def test_the_summary_stars_extrapolated_rois_under_one_note(small_fit: FittedModel) -> None:
    """stderr's summary: a channel whose ROI extrapolates gets a star and all of them share one note
    naming each with its share of low-spend periods; a flat channel gets two stars and its own
    note; FIT.json keeps one warning per channel."""
    from dataclasses import replace

    from budgetloop.cli.fit import _summary_lines
    from models.outputs import fit_json

    spend = small_fit.data.spend.copy()
    spend[:, 0] = np.maximum(spend[:, 0], 0.6 * spend[:, 0].mean())  # ch0 never low
    spend[:, 1] = spend[:, 1].mean()  # ch1 flat
    spend[: max(2, len(spend) // 10), 2] = 0.0  # ch2 paused for a tenth of the table
    fm = replace(small_fit, data=replace(small_fit.data, spend=spend), _cache={})
    doc = fit_json(fm)
    lines = _summary_lines(fm, doc)
    rows = {line.split(":")[0].strip(): line for line in lines if not line.startswith("note:")}
    assert rows["ch0"].split("mROAS")[0].rstrip().endswith("*") and not rows["ch0"].endswith("*")
    assert rows["ch1"].endswith(" **") and not rows["ch2"].rstrip().endswith("*")
    notes = [line for line in lines if line.startswith("note:")]
    assert sum("extrapolates the response curve" in n for n in notes) == 1
    (star,) = [n for n in notes if n.startswith("note: * ")]
    assert star.startswith("note: * ch0: its spend carried over (the adstock its response curve reads) fell")
    assert "below 25% of its mean in 0.0% of the periods" in star
    assert any(n.startswith("note: ** ch1: its spend barely moved") for n in notes)
    assert len([w for w in doc["warnings"] if w.startswith(("ch0:", "ch1:"))]) == 2


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"divergence_retry": None, "warmup_retry": None}, []),
        (  # the rerun at 0.95 kept: the settings hold its target, the record the first run's
            {"target_accept": 0.95, "divergence_retry": {"target_accept": 0.85, "divergences": 40}},
            ["with smaller steps (target_accept 0.95); kept the rerun, the other had 40 divergent"],
        ),
        (  # the rerun did no better: the first run stands, the record is the rerun's
            {"target_accept": 0.85, "divergence_retry": {"target_accept": 0.95, "divergences": 51}},
            ["with smaller steps (target_accept 0.95); kept the first run, the other had 51 divergent"],
        ),
        (
            {"warmup_tree_depth": 8, "warmup_retry": {"warmup_tree_depth": 6, "r_hat_max": 1.18}},
            ["ran again with the whole one; kept the rerun, the other had r-hat 1.180"],
        ),
        (
            {"warmup_tree_depth": 6, "warmup_retry": {"warmup_tree_depth": 8, "r_hat_max": 1.09}},
            ["ran again with the whole one; kept the first run, the other had r-hat 1.090"],
        ),
    ],
)
def test_the_summary_says_when_the_sampler_ran_twice_and_which_run_it_kept(
    settings: dict[str, Any], expected: list[str]
) -> None:
    """A fit that took twice its usual time says why: its automatic rerun, and which run it kept
    (FIT.json's model.settings records the other)."""
    from budgetloop.cli.fit import _rerun_lines

    lines = _rerun_lines(settings)
    assert len(lines) == len(expected)
    for line, part in zip(lines, expected, strict=True):
        assert line.startswith("note: ") and part in line, line


def _no_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fit is replaced by one that stops with a marker: what comes before it ran, cheaply."""
    import models.fit

    def stop(*args: object, **kwargs: object) -> None:
        raise InputError("reached the fit")

    monkeypatch.setattr(models.fit, "fit", stop)


@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_a_seed_the_samplers_cannot_take_is_refused_before_the_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, seed: str
) -> None:
    """--seed -1 ran the whole fit and then crashed in NumPy with a traceback; a seed past 64 bits
    crashed JAX. Both exit 2 up front, naming the flag and the range."""
    _no_fit(monkeypatch)
    table = _write_table(tmp_path / "data.csv")
    out = tmp_path / "FIT.json"
    code, err = _run(["fit", str(table), *BASE, "--seed", seed, "--out", str(out), "--quiet"], capsys)
    assert code == 2, err
    assert f"`--seed`: {seed} is out of range" in err and "from 0 to 4294967295" in err, err
    assert "reached the fit" not in err and "Traceback" not in err and not out.exists()
    code, err = _run(["fit", str(table), *BASE, "--seed", "4294967295", "--out", str(out)], capsys)
    assert code == 2 and "reached the fit" in err, err  # the largest seed passes


def test_the_model_fit_refuses_a_bad_seed_with_a_value_error() -> None:
    from models.fit import check_seed, fit

    data, _ = simulate(periods=20, channels=2, seed=5)
    for bad in (-1, 2**32, 10**20):
        with pytest.raises(ValueError, match=r"`seed` must be a whole number from 0 to 4294967295"):
            fit(data, method="svi", seed=bad)
    assert check_seed(2**32 - 1) == 2**32 - 1


@pytest.mark.parametrize("which", ["data", "relative", "lift", "priors"])
def test_an_out_that_is_an_input_file_is_refused_and_the_input_kept(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    _no_fit(monkeypatch)
    table = _write_table(tmp_path / "data.csv")
    lift = tmp_path / "lift.csv"
    lift.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv,2023-03-06,2023-03-27,-100,150,20\n"
    )
    priors = tmp_path / "priors.yaml"
    priors.write_text("roi_sigma: 0.8\n")
    target = {"data": table, "relative": table, "lift": lift, "priors": priors}[which]
    before = target.read_bytes()
    out = str(target) if which != "relative" else os.path.relpath(target)
    argv = ["fit", str(table), *BASE, "--lift-tests", str(lift), "--priors", str(priors), "--quiet"]
    code, err = _run([*argv, "--out", out], capsys)
    assert code == 2, err
    assert f"--out is the input file {target}" in err and "give --out another path" in err, err
    assert "reached the fit" not in err and target.read_bytes() == before
    code, err = _run([*argv, "--out", str(tmp_path / "FIT.json"), "--model-out", out], capsys)
    assert code == 2 and "--model-out is the input file" in err, err
    assert target.read_bytes() == before
    fit_out = str(tmp_path / "FIT.json")
    code, err = _run([*argv, "--out", fit_out, "--model-out", fit_out], capsys)
    assert code == 2 and "is also --out" in err and "reached the fit" not in err, err


def test_padded_header_names_are_reachable_from_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`date, revenue ,tv, search` named ' search', which --channels (stripped) could never reach."""
    _no_fit(monkeypatch)
    table = _write_table(tmp_path / "data.csv")
    lines = table.read_text().splitlines()
    assert lines[0] == "date,revenue,tv,search,price"
    table.write_text("\n".join(["date, revenue ,tv, search,price", *lines[1:]]) + "\n")
    out = tmp_path / "FIT.json"
    argv = ["fit", str(table), "--target", " revenue ", "--date", "date", "--channels", "tv, search"]
    code, err = _run([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "reached the fit" in err, err  # the table loaded


def test_svi_diverging_on_a_contradicting_lift_test_names_the_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lift test 1000 times what the table allows made SVI's loss non-finite and `fit` exit 1 with
    "SVI diverged". The table alone fits: exit 2 naming the test against that fit's prediction of it."""
    table = _write_table(tmp_path / "data.csv")
    lift = tmp_path / "lift.csv"
    lift.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        "tv,2023-01-02,2023-01-23,-4000,6000,600\n"
        "search,2023-05-01,2023-05-29,-5000,40000000,400\n"
    )
    out = tmp_path / "FIT.json"
    argv = ["fit", str(table), *BASE, "--lift-tests", str(lift), "--method", "svi", "--holdout", "0"]
    code, err = _run([*argv, "--out", str(out), "--quiet"], capsys)
    assert code == 2, err
    assert f"{lift}, row 3, `incremental_revenue`: SVI diverged" in err, err
    assert "lift test 2 (`search`, 2023-05-01..2023-05-29): measured 4e+07" in err
    assert "the table and the test disagree" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_a_plots_path_no_folder_can_take_is_refused_before_the_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``--plots`` naming a file (or a folder under one) raised a traceback after the whole fit,
    exit 1, and the fit was lost: no FIT.json."""
    import models.fit

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit ran before --plots was checked")

    monkeypatch.setattr(models.fit, "fit", no_fit)
    table = _write_table(tmp_path / "data.csv")
    plots = table if where == "a_file" else table / "plots"
    out = tmp_path / "FIT.json"
    code, err = _run(["fit", str(table), *BASE, "--out", str(out), "--plots", str(plots)], capsys)
    assert code == 2, err
    assert "`--plots`" in err and "is a file" in err and "Traceback" not in err
    assert not out.exists() and table.is_file()


def test_quiet_hides_the_progress_but_never_the_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tmp_path / "data.csv")
    _edit(table, 20, "revenue", str(8 * float(pd.read_csv(table)["revenue"].mean())))  # an unexplained week
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "150", "--samples", "100", "--holdout", "0", "--allow-unhealthy"]
    code, err = _run(["fit", str(table), *BASE, "--out", str(out), "--quiet", *quick], capsys)
    assert code == 0, err
    warnings = json.loads(out.read_text())["warnings"]
    assert any("far from anything the model can explain" in w for w in warnings)
    for w in warnings:
        assert f"note: {w}" in err
    assert "fitting 40 weeks" not in err and "NUTS warmup" not in err and ": ROI " not in err  # no chatter


def test_a_shape_prior_in_the_file_with_the_logistic_curve_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tmp_path / "data.csv")
    out = tmp_path / "FIT.json"
    for text, key in (
        ("shape: {median: 3, sigma: 0.1}\n", "shape"),
        ("channels:\n  tv:\n    shape: {median: 1.0, sigma: 0.2}\n", "channels.tv.shape"),
    ):
        priors = tmp_path / "priors.yaml"
        priors.write_text(text)
        argv = [
            "fit",
            str(table),
            *BASE,
            "--saturation",
            "logistic",
            "--priors",
            str(priors),
            "--out",
            str(out),
        ]
        code, err = _run(argv, capsys)
        assert code == 2, err
        assert str(priors) in err and f"`{key}`" in err and "logistic saturation has no shape" in err, err
        assert not out.exists() and "fitting" not in err  # refused before the fit


def test_each_lift_test_is_checked_against_the_table_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tmp_path / "data.csv")
    spend = pd.read_csv(table)["tv"]
    delta = -0.5 * float(spend.iloc[20:24].min()) * 4
    lift = tmp_path / "lift.csv"
    lift.write_text(  # a lift of 20 dollars per dollar held out, measured to 5%: the table says far less
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        f"tv,{pd.read_csv(table)['date'][20]},{pd.read_csv(table)['date'][23]},{delta},{-20 * delta},{-delta}\n"
    )
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "150", "--samples", "100", "--holdout", "0", "--allow-unhealthy"]
    code, err = _run(["fit", str(table), *BASE, "--lift-tests", str(lift), "--out", str(out), *quick], capsys)
    assert code == 0, err
    assert "checking each lift test against the table alone" in err
    doc = json.loads(out.read_text())
    alone = doc["lift_tests"][0]["table_alone"]
    assert set(alone) == {"predicted", "z", "agrees", "roi_table_alone"} and alone["agrees"] is False
    assert alone["predicted"]["p95"] < -20 * delta
    (warning,) = [w for w in doc["warnings"] if "where the table alone predicts" in w]
    assert warning.startswith("lift test 1 (`tv`") and f"note: {warning}" in err


def test_no_check_tests_skips_the_table_alone_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _write_table(tmp_path / "data.csv")
    dates = pd.read_csv(table)["date"]
    lift = tmp_path / "lift.csv"
    lift.write_text(
        "channel,start,end,spend_delta,incremental_revenue,incremental_revenue_se\n"
        f"tv,{dates[20]},{dates[23]},-100,150,20\n"
    )
    out = tmp_path / "FIT.json"
    quick = ["--chains", "1", "--warmup", "150", "--samples", "100", "--holdout", "0", "--allow-unhealthy"]
    argv = ["fit", str(table), *BASE, "--lift-tests", str(lift), "--no-check-tests", "--out", str(out)]
    code, err = _run([*argv, *quick], capsys)
    assert code == 0, err
    assert "table alone" not in err and "table_alone" not in json.loads(out.read_text())["lift_tests"][0]
