"""`budgetloop fit DATA.csv --target COL --date COL --channels A,B,... --out FIT.json`.

Fits the Bayesian MMM (``models/``) to a user's table and writes INTERFACES section 3's JSON, plus
optional plots and the full model document (``--model-out``) that the agents store as a version.
Bad input exits 2 naming the file, row and column; outputs are written atomically, only after the
fit succeeded. An unhealthy fit (r-hat, divergences) is written with ``diagnostics.healthy = false``
and its reasons, reported on stderr, and exits 3 unless ``--allow-unhealthy``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from budgetloop.cli import app, check_not_an_input, same_file
from budgetloop.errors import InputError
from budgetloop.fileio import check_output_folder, check_output_path, write_output

DEFAULT_CACHE = Path("var") / "jax-cache"


def _split(value: str | None, flag: str) -> list[str]:
    if value is None:
        return []
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError("no names given", key=flag, fix=f"pass {flag} A,B,...")
    return names


@app.command("fit", help="Fit the Bayesian MMM to a weekly or daily table and write FIT.json.")
def fit_command(
    data: Path = typer.Argument(..., help="CSV table, one row per period"),
    target: str = typer.Option(..., "--target", help="revenue column"),
    date: str = typer.Option(..., "--date", help="date column (ISO dates)"),
    channels: str = typer.Option(..., "--channels", help="spend columns, comma-separated"),
    out: Path = typer.Option(..., "--out", help="where to write FIT.json"),
    controls: str | None = typer.Option(None, "--controls", help="numeric control columns, comma-separated"),
    lift_tests: Path | None = typer.Option(None, "--lift-tests", help="lift-test CSV (INTERFACES section 2)"),
    priors_file: Path | None = typer.Option(
        None,
        "--priors",
        help="YAML file overriding default priors, model-wide or per channel (ROI, decay, half, shape); "
        "see docs/model.md",
    ),
    chains: int = typer.Option(2, "--chains", min=1),
    warmup: int = typer.Option(1000, "--warmup", min=1),
    samples: int = typer.Option(1000, "--samples", min=10),
    seed: int = typer.Option(0, "--seed"),
    method: str = typer.Option("nuts", "--method", help="nuts (default) or svi (fast refresh)"),
    baseline: str = typer.Option(
        "multiplicative",
        "--baseline",
        help="how trend, seasonality and controls combine: multiplicative (relative effects) or additive",
    ),
    adstock: str = typer.Option("geometric", "--adstock", help="geometric or delayed (peak after a lag)"),
    saturation: str = typer.Option(
        "hill",
        "--saturation",
        help="response curve: hill (S-shaped or concave, fitted) or logistic (concave, as PyMC-Marketing)",
    ),
    holdout: int | None = typer.Option(
        None, "--holdout", help="periods held out for the holdout MAPE (default 13 weeks / 28 days; 0: none)"
    ),
    plots: Path | None = typer.Option(None, "--plots", help="folder for PNG plots"),
    model_out: Path | None = typer.Option(None, "--model-out", help="also write the full model document"),
    cache_dir: Path = typer.Option(DEFAULT_CACHE, "--cache-dir", help="JAX compilation cache"),
    allow_unhealthy: bool = typer.Option(
        False, "--allow-unhealthy", help="exit 0 even when diagnostics fail"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", help="no progress or per-channel summary on stderr (warnings still print)"
    ),
    check_tests: bool = typer.Option(
        True,
        "--check-tests/--no-check-tests",
        help="with --lift-tests: check each test against a quick fit of the table alone (SVI, a few "
        "seconds more; FIT.json lift_tests[].table_alone)",
    ),
) -> None:
    import models  # noqa: F401  (asks for one XLA host device per core before JAX starts)
    from models.data import MIN_PERIODS, load_csv
    from models.fit import SEED_MAX, enable_compilation_cache, fit, max_holdout_periods
    from models.lift import load_lift_tests
    from models.outputs import fit_json
    from models.priors import load_priors
    from models.serialize import dumps

    def say(msg: str) -> None:
        if not quiet:
            typer.echo(msg, err=True)

    # a seed the samplers cannot take, or a path no file can be written to (or that is an input
    # file), is refused now, not after a fit of many minutes
    if not 0 <= seed <= SEED_MAX:
        raise InputError(
            f"{seed} is out of range",
            key="--seed",
            fix=f"pass a whole number from 0 to {SEED_MAX} (2**32 - 1)",
        )
    check_output_path(out, flag="--out")
    inputs = {"DATA table": data, "--lift-tests file": lift_tests, "--priors file": priors_file}
    check_not_an_input(out, flag="--out", inputs=inputs)
    if model_out is not None:
        check_output_path(model_out, flag="--model-out")
        check_not_an_input(model_out, flag="--model-out", inputs=inputs)
        if same_file(model_out, out):
            raise InputError(
                f"{model_out} is also --out: the model document would overwrite FIT.json",
                key="--model-out",
                fix="give --model-out and --out different paths",
            )
    if plots is not None:
        check_output_folder(plots, flag="--plots")
    table = load_csv(
        data,
        # the table's header names are read stripped of spaces, as --channels' are
        target=target.strip(),
        date=date.strip(),
        channels=_split(channels, "--channels"),
        controls=_split(controls, "--controls"),
    )
    tests = load_lift_tests(lift_tests) if lift_tests is not None else []
    priors = None
    if priors_file is not None:
        priors = load_priors(priors_file)
        priors.check_channels(table.channels, source=str(priors_file))
        priors.check_saturation(saturation, source=str(priors_file))
    # checked here, before the fit, so that the message names the flag
    most = max_holdout_periods(table.periods)
    no_holdout = None  # FIT.json's warning where the default holdout finds no rows to take
    if holdout is None:
        holdout = min(13 if table.frequency == "week" else 28, table.periods // 4, most)
        if not holdout:
            no_holdout = (
                f"no holdout: the table's {table.periods} rows leave none to spare (the refit keeps at "
                f"least {MIN_PERIODS}), so FIT.json's `holdout` is null; a table of {MIN_PERIODS + 1} rows "
                "or more gets one"
            )
    elif holdout != 0 and not 1 <= holdout <= most:
        raise InputError(
            f"{holdout} periods held out of the table's {table.periods}",
            key="--holdout",
            fix=(
                f"use between 1 and {most} periods (at most a third of the table, leaving the refit at "
                f"least {MIN_PERIODS}), or 0 for no holdout"
                if most >= 1
                else f"use 0: {table.periods} rows leave none to spare"
            ),
        )
    enable_compilation_cache(cache_dir)
    # SVI has no chains or warmup: it draws chains x samples from its fitted guide
    run = (
        f"svi, {chains * samples} draws"
        if method == "svi"
        else f"{method}, {chains} chain(s) x {warmup}+{samples}"
    )
    say(
        f"fitting {table.periods} {table.frequency}s x {len(table.channels)} channels"
        f"{f' with {len(tests)} lift test(s)' if tests else ''}: {run}, {baseline} baseline, {adstock} adstock, {saturation} saturation, seed {seed}{f', holdout {holdout}' if holdout else ''}"
    )
    fm = fit(
        table,
        priors=priors,
        lift_tests=tests,
        method=method,
        baseline=baseline,
        adstock=adstock,
        saturation=saturation,
        chains=chains,
        warmup=warmup,
        samples=samples,
        seed=seed,
        progress=not quiet,
        holdout_periods=holdout or None,
        lift_source=str(lift_tests) if lift_tests else "<lift tests>",
        # shapes on a coarse grid: a table a week longer finds its sampler in the compilation cache
        round_shapes="all",
    )
    plot_paths = None
    if plots is not None:
        from models.plots import write_plots

        try:
            plot_paths = write_plots(fm, plots)
        except OSError as exc:  # the folder changed under the fit: keep the fit, say what failed
            typer.echo(f"warning: no plots written to {plots}: {exc.strerror or exc}", err=True)
            plot_paths = None
    doc = fit_json(fm, plots=plot_paths)
    if no_holdout is not None:
        doc["warnings"].append(no_holdout)
    if tests and check_tests:
        _check_against_the_table(fm, doc, say)
    if model_out is not None:
        write_output(model_out, dumps(fm), flag="--model-out")
    write_output(out, json.dumps(doc, indent=1) + "\n", flag="--out")
    d = fm.diagnostics
    rhat = "n/a" if d.r_hat_max is None else f"{d.r_hat_max:.3f}"
    ess = "n/a" if d.ess_bulk_min is None else f"{d.ess_bulk_min:.0f}"
    hold = f", holdout MAPE {fm.holdout.mape:.1%}" if fm.holdout else ""
    say(f"done in {d.fit_seconds:.1f}s: r-hat max {rhat}, ESS min {ess}, divergences {d.divergences}{hold}")
    # what the analyst must know prints even with --quiet: the reruns and FIT.json's warnings
    for line in _rerun_lines(fm.settings):
        typer.echo(line, err=True)
    if quiet:
        for warning in doc["warnings"]:
            typer.echo(f"note: {warning}", err=True)
    else:
        for line in _summary_lines(fm, doc):
            say(line)
    if not fm.healthy:
        typer.echo("warning: the fit is NOT healthy; do not use it for decisions:", err=True)
        for r in d.reasons:
            typer.echo(f"  - {r}", err=True)
        if not allow_unhealthy:
            raise typer.Exit(3)


def _check_against_the_table(fm: Any, doc: dict[str, Any], say: Any) -> None:
    """Each lift test against the table alone (``models.fit.check_lift_tests_against_the_table``),
    into FIT.json's ``lift_tests[].table_alone`` and ``warnings``: a tight test the table contradicts
    pulls the calibrated posterior to itself, so only the table-alone fit shows the conflict."""
    from budgetloop.errors import FitError
    from models.fit import check_lift_tests_against_the_table
    from models.outputs import table_alone_block

    say("checking each lift test against the table alone (a quick SVI fit without the tests)")
    try:
        checks = check_lift_tests_against_the_table(fm)
    except FitError as exc:
        doc["warnings"].append(f"the lift tests were not checked against the table alone: {exc}")
        return
    except Exception as exc:  # an extra check must never cost the fit already made
        doc["warnings"].append(
            f"the lift tests were not checked against the table alone ({type(exc).__name__}: {exc})"
        )
        return
    for check in checks:
        doc["lift_tests"][check.number - 1]["table_alone"] = table_alone_block(check)
        warning = check.warning()
        if warning:
            doc["warnings"].append(warning)


def _rerun_lines(settings: dict[str, Any]) -> list[str]:
    """What the fit ran twice, and which run it kept (``models.fit.fit``'s automatic reruns; FIT.json's
    ``model.settings`` records the run not kept): why a fit took about twice its usual time."""

    def note(why: str, rerun_kept: bool, other: str) -> str:
        return f"note: {why}; kept {'the rerun' if rerun_kept else 'the first run'}, the other had {other}"

    lines = []
    div = settings.get("divergence_retry")
    if div:  # the other run's target acceptance and divergences; the rerun's target is the higher
        target = max(div["target_accept"], settings["target_accept"])
        lines.append(
            note(
                f"divergent transitions made the sampler run again with smaller steps (target_accept {target:g})",
                div["target_accept"] < settings["target_accept"],
                f"{div['divergences']} divergent transitions",
            )
        )
    warm = settings.get("warmup_retry")
    if warm:  # the other run's warmup tree depth and r-hat; the rerun's depth is the larger
        lines.append(
            note(
                "the chains disagreed after the quick warmup, so the sampler ran again with the whole one",
                warm["warmup_tree_depth"] < settings["warmup_tree_depth"],
                f"r-hat {warm['r_hat_max']:.3f}",
            )
        )
    return lines


def _summary_lines(fm: Any, doc: dict[str, Any]) -> list[str]:
    """One line per channel, then the notes. A channel whose ROI extrapolates below the spend the
    table shows is starred and the stars share one note, so twenty such channels do not print twenty
    copies of the same paragraph; one whose mROAS too is the priors' gets two stars and its own
    note; every other warning (FIT.json's ``warnings``) follows as is."""
    from models.fitted import roi_extrapolation_note

    support = {s.channel: s for s in fm.spend_support()}
    starred = [s for s in support.values() if s.roi_extrapolated and not s.mroas_from_prior]
    lines = []
    for ch, v in doc["channels"].items():
        star = " *" if support[ch] in starred else ""
        stars = " **" if support[ch].mroas_from_prior else ""
        lines.append(
            f"  {ch:>24}: ROI {v['roi']['median']:.3g} [{v['roi']['p05']:.3g}, {v['roi']['p95']:.3g}]{star}  "
            f"mROAS {v['mroas']['median']:.3g} [{v['mroas']['p05']:.3g}, {v['mroas']['p95']:.3g}]{stars}"
        )
    if starred:
        lines.append(f"note: * {roi_extrapolation_note(starred)}")
    grouped = {s.warning() for s in starred}
    flat = {s.warning() for s in support.values() if s.mroas_from_prior}
    lines += [f"note: {'** ' if w in flat else ''}{w}" for w in doc["warnings"] if w not in grouped]
    return lines
