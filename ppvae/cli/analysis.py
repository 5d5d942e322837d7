"""Commands that analyse runs: ``score`` (anomaly scores), ``compare`` (backends and estimators) and
``diagnose`` (how good q(z|x) is)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ppvae.cli.options import (
    CONTEXT,
    data_option,
    checkpoint_option,
    device_option,
    force_option,
    json_option,
    num_samples_option,
    out_option,
    progress_echo,
    quiet_option,
    run_argument,
    seed_option,
    set_option,
    with_plugins,
)
from ppvae.cli.outputs import check_out, fmt
from ppvae.errors import UsageError
from ppvae.inference.estimators import estimator_names, importance_weighted_names
from ppvae.spec.config import parse_override, validate_device

__all__ = ["score", "compare", "diagnose"]


def _parse_classes(text: str | None) -> list[int] | None:
    """``--anomalous 9`` or ``--anomalous 8,9`` -> [9] or [8, 9]."""
    if text is None:
        return None
    try:
        classes = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        classes = []
    if not classes:
        raise UsageError(
            f"--anomalous {text!r}: give the integer label(s) of the anomalous class, "
            "e.g. --anomalous 9 or --anomalous 8,9"
        )
    return classes


@click.command(context_settings=CONTEXT)
@run_argument
@data_option("Points to score (default: the run's held-out split); a file is prepared like the training data.")
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="One integer label per point (.npy, .npz, .csv or .txt); default: the data's own labels.",
)
@click.option(
    "--anomalous",
    metavar="CLASSES",
    help="Label(s) that count as anomalies, comma-separated (9, or 8,9); 0/1 labels need none.",
)
@out_option("scores.csv, one row per point; with anomalous and normal points also scores.png beside it.")
@num_samples_option("Draws from q(z|x) per point (K of the IWAE bound on log p(x)).")
@seed_option("Seed of the draws.")
@device_option()
@checkpoint_option()
@click.option(
    "--latent-density",
    is_flag=True,
    help="Also score by density in latent space: -log of a Gaussian mixture fit to the training "
    "split's posterior means, evaluated at each point's posterior mean.",
)
@json_option("Print the summary (means, ROC AUCs, files) as JSON.")
@force_option("Overwrite --out (and its picture) if they exist.")
@with_plugins
def score(
    run, data, labels_file, anomalous, out, num_samples, seed, device, checkpoint, latent_density, as_json, force
):
    """Anomaly scores per datapoint: -ELBO and -log p(x) (higher = more unusual).

    Both come from the same K draws z ~ q(z|x) per point: -ELBO is minus their mean log
    weight, -log p(x) the importance-weighted (IWAE) estimate, which is never above it.

    \b
    OUT gets one row per point: index, label (if known), anomalous (0/1, if known),
    neg_elbo and neg_log_px (nats), and neg_log_latent_density with --latent-density.
    Likelihoods also track how simple an input is: an unseen class of simple shapes can
    score as normal. --latent-density asks instead whether the encoder puts the point
    where it puts normal (training) data, which often separates such classes better.

    \b
    With labels and --anomalous (or labels that are already 0/1), also the ROC AUC of
    each score (1 = every anomaly ranked above every normal point, 0.5 = chance) and a
    picture beside OUT: the scores' histograms by class and the ROC curves.

    \b
    Examples:
      ppvae score runs/digits0-8 --data test.npz --anomalous 9 --latent-density --out scores.csv
      ppvae score runs/z2 --out heldout_scores.csv -k 200
      ppvae score runs/z2 --data new.npy --labels is_fraud.npy --out fraud.csv --json
    """
    check_out(out, force, (".csv",))
    classes = _parse_classes(anomalous)
    from ppvae import api
    from ppvae.analysis.scoring import SCORES, read_labels, score_data

    r = api.load(run, device=device, checkpoint=checkpoint)
    x, labels = r.load_data(data)
    if labels_file is not None:
        labels = read_labels(labels_file, len(x))
    report = score_data(
        r,
        x,
        labels=labels,
        anomalous=classes,
        out=out,
        force=force,
        num_samples=num_samples,
        seed=seed,
        latent_density=latent_density,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    d = report.to_dict()
    click.echo(
        f"scored {d['num_points']} points (K = {num_samples} draws each): mean -ELBO "
        f"{fmt(d['mean_neg_elbo'])}, mean -log p(x) {fmt(d['mean_neg_log_px'])} nats; wrote {out}"
    )
    if report.roc_auc:
        aucs = ", ".join(f"{SCORES[k]} {v:.3f}" for k, v in report.roc_auc.items())
        click.echo(f"ROC AUC, {d['num_anomalous']} anomalous vs {d['num_normal']} normal points: {aucs}")
        click.echo(f"picture: {report.picture}")
    elif labels is not None:
        click.echo(
            "no ROC AUC: the labels are not 0/1; pass --anomalous with the anomalous label(s), e.g. --anomalous 9"
        )


@click.command(context_settings=CONTEXT)
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backends",
    default="pyro",
    show_default=True,
    metavar="NAMES",
    help="Comma-separated inference backends: pyro, numpyro.",
)
@click.option(
    "--elbos",
    default="meanfield",
    show_default=True,
    metavar="NAMES",
    help=f"Comma-separated training estimators: {', '.join(estimator_names())} "
    f"({' and '.join(importance_weighted_names())} use the spec's train.num_particles as K, "
    "or 5 when that is 1).",
)
@click.option(
    "--seeds",
    default="0",
    show_default=True,
    metavar="SEEDS",
    help="Comma-separated training seeds; each row is mean ± spread over them.",
)
@click.option("--epochs", type=int, help="Epochs of every run (default: the spec's).")
@device_option(default=None, help="auto, cpu, cuda or cuda:N (default: the spec's).")
@out_option("Folder for the run folders and results (default runs/compare-<timestamp>).", kind="path", required=False)
@set_option("Any spec setting, as for ppvae fit. Repeatable.")
@json_option("Print comparison.json instead of the table.")
@click.option("--pictures", is_flag=True, help="Also write each run's samples, reconstructions and loss plots.")
@force_option("Overwrite the runs and results in an existing --out.")
@quiet_option("No progress messages or bars.")
@with_plugins
def compare(spec, backends, elbos, seeds, epochs, device, out, settings, as_json, pictures, force, quiet, plugins=()):
    """Train one spec with several backends and estimators, and compare them.

    Every combination of backend, estimator and seed is trained on the same data split
    into OUT/<backend>-<estimator>-seed<k>/. One row per backend and estimator gives
    device, epochs, wall time, seconds per epoch, images per second, held-out ELBO,
    held-out log p(x) (IWAE bound with K = train.eval_num_samples), KL and active units,
    each as mean ± spread (sample standard deviation) over the seeds. A held-out ELBO or
    log p(x) that differs from the best row's by more than the two rows' spreads together
    is marked with *.

    \b
    OUT also gets comparison.json (per-seed raw numbers, protocol and machine facts),
    comparison.md (the table and its footnotes) and comparison.png (held-out ELBO
    against training time, one line per row). Names, the spec and the data are checked
    before anything is trained.

    \b
    Examples:
      ppvae compare --elbos meanfield,trace,iwae --seeds 0,1,2 --epochs 10
      ppvae compare models/mlp-400.toml --backends pyro,numpyro --seeds 0,1,2 --out runs/backends
      ppvae compare --elbos meanfield,iwae --set train.num_particles=10 --set model.latent_dim=2 --json
      ppvae compare --backends pyro,numpyro --device cuda --epochs 5 -q
    """
    from ppvae.analysis import compare as comparing
    from ppvae.errors import TrainingError

    if device is not None:  # checked before any run starts, as on the commands that open a run
        validate_device(device)
    overrides = dict(parse_override(s) for s in settings)
    echo = progress_echo(quiet)
    if plugins:
        # The runs record the plug-ins through the spec they train.
        from ppvae import api

        spec = api.build_config(spec, plugins=plugins)
    result = comparing.compare(
        spec,
        backends=backends,
        elbos=elbos,
        seeds=seeds,
        epochs=epochs,
        device=device,
        out=out,
        overrides=overrides,
        force=force,
        pictures=pictures,
        progress=not quiet,
        echo=echo,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(result.to_markdown(), nl=False)
        files = ", ".join(str(p) for p in (result.markdown_path, result.json_path, result.plot_path) if p.exists())
        click.echo(f"\nrun folders in {result.out}; results: {files}")
    failed = result.failed_runs
    if failed:
        total = sum(len(row["runs"]) for row in result.rows)
        raise TrainingError(
            f"{len(failed)} of {total} runs stopped with an error "
            f"({', '.join(Path(f).name for f in failed)}) and are left out of the table; "
            f"their messages are in {result.json_path}"
        )


@click.command(context_settings=CONTEXT)
@run_argument
@data_option("Diagnose points of this source (default: the run's held-out split).")
@click.option("--num-points", "-n", type=int, default=100, show_default=True, help="Points evaluated.")
@click.option(
    "--num-draws",
    "-s",
    type=int,
    default=1000,
    show_default=True,
    help="Draws from q(z|x) per point (PSIS needs a few hundred).",
)
@click.option(
    "--reference",
    type=click.Choice(["nuts"]),
    default=None,
    help="Also compute a reference posterior by NUTS (NumPyro, 4 chains) for --reference-points points.",
)
@click.option("--reference-points", type=int, default=5, show_default=True)
@click.option(
    "--gap-points",
    type=int,
    default=20,
    show_default=True,
    help="Points for the amortization/approximation gaps (0 skips them).",
)
@out_option(
    "Folder for report.md, pictures, inference_data.nc and diagnostics.json (default RUN/diagnostics).",
    kind="folder",
    required=False,
)
@seed_option()
@device_option()
@checkpoint_option()
@json_option("Print the numbers as JSON.")
@quiet_option("No progress messages.")
@with_plugins
def diagnose(
    run,
    data,
    num_points,
    num_draws,
    reference,
    reference_points,
    gap_points,
    out,
    seed,
    device,
    checkpoint,
    as_json,
    quiet,
):
    """How good is the encoder's q(z|x)? PSIS k-hat, gaps, collapse, NUTS.

    \b
    For N points of the run's held-out split:
      - PSIS Pareto k-hat of p(x,z)/q(z|x) per point (> 0.7: q is an unreliable proposal),
        with the worst inputs beside their reconstructions;
      - posterior collapse: KL per latent dimension and active units;
      - the approximation and amortization gaps (Cremer et al. 2018), by fitting a q to
        each point alone (needs the numpyro extra);
      - with --reference nuts, a NUTS reference posterior with R-hat and ESS, and q's
        errors against it.
    Writes report.md (tables, pictures, and what they mean), inference_data.nc (ArviZ),
    diagnostics.json and the pictures.

    \b
    Examples:
      ppvae diagnose runs/first
      ppvae diagnose runs/first -n 200 --reference nuts --out runs/first/diag
      ppvae diagnose runs/first --json -q
    """
    from ppvae import api
    from ppvae.analysis.diagnostics import diagnose as run_diagnose

    r = api.load(run, device=device, checkpoint=checkpoint)
    if r.num_classes:
        raise UsageError(
            f"ppvae diagnose does not handle conditional runs yet ({r.path} has model.conditional = "
            "true): its checks use q(z|x) without labels; ppvae evaluate gives log p(x|y)"
        )
    echo = progress_echo(quiet)
    result = run_diagnose(
        r,
        data=data,
        num_points=num_points,
        num_draws=num_draws,
        reference=reference,
        reference_points=reference_points,
        gap_points=gap_points,
        out=out,
        seed=seed,
        echo=echo,
        progress=not quiet,
    )
    if as_json:
        click.echo(json.dumps(result.numbers, indent=2, sort_keys=True, default=str))
        return
    p = result.numbers["psis"]
    click.echo(
        f"k-hat > 0.7 for {p['share_above_0.7']:.0%} of {result.numbers['num_points']} points "
        f"(median {p['median']:.2f}); active units {result.numbers['collapse']['active_units']} of "
        f"{result.numbers['collapse']['latent_dim']}"
    )
    if "gaps" in result.numbers:
        g = result.numbers["gaps"]
        click.echo(
            f"approximation gap {np.mean(g['approximation_gap']):.2f}, amortization gap "
            f"{np.mean(g['amortization_gap']):.2f} nats (mean over {len(g['approximation_gap'])} points)"
        )
    if "reference" in result.numbers:
        ref = result.numbers["reference"]
        click.echo(f"NUTS reference: max R-hat {ref['max_rhat']:.3f}, min bulk ESS {ref['min_ess_bulk']:.0f}")
    click.echo(f"report: {result.out / 'report.md'}")
