"""``ppvae diagnose``: how good is the encoder's q(z|x)?

For N held-out points of a run (either backend) it computes

- an ArviZ InferenceData of S draws from q(z|x) per point (posterior), reconstructions
  (posterior predictive), the data (observed), log p(x|z) (log likelihood) and the
  importance log-weights (sample stats), written as netCDF;
- the PSIS Pareto k-hat of the importance ratios p(x, z)/q(z|x) per point (Yao et al.
  2018): where k-hat > 0.7, q is an unreliable proposal and log p(x) estimates from it
  are untrustworthy;
- posterior collapse: KL per latent dimension and active units;
- the inference gaps of Cremer et al. (2018) per point: approximation gap (the Gaussian
  family) and amortization gap (the encoder), by optimizing a q for each point alone;
- with ``reference="nuts"``, a reference posterior by NUTS (NumPyro, 4 chains) with the
  decoder frozen, its R-hat and ESS, and q's errors against it.

The gaps and NUTS run in JAX: a Pyro run's weights are converted to the NumPyro
backend's networks (``pip install "ppvae[numpyro]"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ppvae.spec import registry
from ppvae.model.hierarchy import latent_sites
from ppvae.errors import BackendUnavailableError, UsageError
from ppvae.runs.atomic import atomic_write_json
from ppvae.analysis.diagnostics import arviz_io
from ppvae.plotting import diagnostics as figures
from ppvae.analysis.diagnostics.report import write_report

__all__ = ["diagnose", "Diagnostics", "KHAT_GOOD", "KHAT_BAD"]

KHAT_GOOD, KHAT_BAD = 0.5, 0.7


@dataclass
class Diagnostics:
    """What ``ppvae diagnose`` found; ``numbers`` is what ``--json`` prints."""

    out: Path
    numbers: dict
    files: dict[str, str] = field(default_factory=dict)


def _plain(value):
    """JSON-ready: dicts recursively, arrays as lists, scalars as floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if np.ndim(value):
        return np.asarray(value, dtype=float).tolist()
    return float(value)


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).mean(axis=axis, keepdims=True))).squeeze(axis)


def _inference_data(run, x, d, labels):
    n, S = x.shape[0], d["z"].shape[0]
    event = run.event_shape
    event_dims = [f"x_dim_{i}" for i in range(len(event))]
    log_w = d["log_lik"] + d["log_prior"] - d["log_q"]
    coords = {"point": np.arange(n), "latent": np.arange(d["z"].shape[-1])}
    return arviz_io.inference_data(
        posterior={"z": d["z"][None]},
        posterior_predictive={"x": d["x_mean"][None]},
        observed_data={"x": x},
        log_likelihood={"x": d["log_lik"][None]},
        sample_stats={
            "log_importance_weight": log_w[None],
            "log_q": d["log_q"][None],
            "log_prior": d["log_prior"][None],
        },
        dims={
            "z": ["point", "latent"],
            "x": ["point", *event_dims],
            "log_importance_weight": ["point"],
            "log_q": ["point"],
            "log_prior": ["point"],
        },
        coords=coords,
        attrs={
            "ppvae_run": str(run.path),
            "backend": run.config.train.backend,
            "draws_from": "q(z|x), independent (one chain)",
            "num_draws": S,
            **({"labels": np.asarray(labels).tolist()} if labels is not None else {}),
        },
    )


def diagnose(
    run,
    *,
    data: str | None = None,
    num_points: int = 100,
    num_draws: int = 1000,
    reference: str | None = None,
    reference_points: int = 5,
    gap_points: int = 20,
    out: str | Path | None = None,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
    progress: bool = False,
) -> Diagnostics:
    """Diagnose a run's q(z|x); write the report, pictures, netCDF and JSON into ``out``.

    Parameters
    ----------
    run : ppvae.Run
        A trained run of either backend.
    data : str, optional
        Source of the points (default: the run's held-out split).
    num_points : int
        Points evaluated (the first N of the source).
    num_draws : int
        Draws from q(z|x) per point (S): PSIS needs a few hundred at least.
    reference : {None, "nuts"}
        Also compute a NUTS reference posterior for ``reference_points`` points.
    gap_points : int
        Points for the inference gaps (0 skips them).
    out : path, optional
        Output folder (default ``RUN/diagnostics``).
    """
    say = echo or (lambda msg: None)
    if not (isinstance(num_points, int) and num_points > 0):
        raise UsageError(f"--num-points must be a positive integer, got {num_points!r}")
    if not (isinstance(num_draws, int) and num_draws >= 20):
        raise UsageError(f"--num-draws must be an integer of at least 20 (PSIS fits a tail), got {num_draws!r}")
    if reference not in (None, "nuts"):
        raise UsageError(f"--reference {reference!r} is not known; the reference posterior available is: nuts")
    sites = latent_sites(1 + len(run.config.model.latent_layers))
    if reference == "nuts" and len(sites) > 1:
        raise UsageError(
            f"--reference nuts samples the posterior of one latent site; this run has {len(sites)} "
            f"({', '.join(sites)}): diagnose it without --reference (k̂ and collapse cover every layer's draws)"
        )
    needs_jax = reference == "nuts" or gap_points > 0
    npb = None
    if needs_jax:
        try:
            npb = registry.load_backend("numpyro")
        except BackendUnavailableError:
            if reference == "nuts":
                raise BackendUnavailableError(
                    "--reference nuts runs NUTS in NumPyro, which is not installed; "
                    "install it with: pip install 'ppvae[numpyro]'"
                ) from None
            say("NumPyro is not installed: skipping the inference gaps (pip install 'ppvae[numpyro]')")
    out = Path(out) if out is not None else run.path / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)

    x_all, labels = run.load_data(data)
    x = x_all[:num_points]
    labels = None if labels is None else labels[: len(x)]
    n = len(x)
    numbers: dict = {"run": str(run.path), "backend": run.config.train.backend, "num_points": n, "num_draws": num_draws}
    files: dict[str, str] = {}
    started = time.perf_counter()

    say(f"drawing {num_draws} samples of z from q(z|x) for {n} points")
    d = run.trained.draws(x, num_draws, seed=seed, predictive_draws=min(num_draws, 50))
    log_w = d["log_lik"] + d["log_prior"] - d["log_q"]  # (S, n)
    khat = arviz_io.psis_khat(log_w.T)
    iwae = _logmeanexp(log_w, 0)
    elbo = log_w.mean(0)
    numbers["psis"] = {
        "khat": khat.tolist(),
        "share_above_0.7": float((khat > KHAT_BAD).mean()),
        "share_0.5_to_0.7": float(((khat > KHAT_GOOD) & (khat <= KHAT_BAD)).mean()),
        "share_below_0.5": float((khat <= KHAT_GOOD).mean()),
        "median": float(np.median(khat)),
        "max": float(khat.max()),
    }
    numbers["estimates_from_draws"] = {"elbo": float(elbo.mean()), f"iwae_{num_draws}": float(iwae.mean())}

    idata = _inference_data(run, x, d, labels)
    arviz_io.write_netcdf(idata, out / "inference_data.nc")
    files["inference_data"] = "inference_data.nc"

    say("posterior collapse: KL per latent dimension")
    ev = run.trained.evaluate(x, num_samples=1, seed=seed, is_image=False)
    loc, scale = run.trained.encode(x)
    variance = loc.var(axis=0, ddof=1) if n > 1 else np.zeros(loc.shape[1])
    active = variance > 0.01
    numbers["collapse"] = {
        "kl_per_dim": ev["kl_per_dim"],
        "active_units": int(active.sum()),
        "latent_dim": int(loc.shape[1]),
        "posterior_mean_variance": variance.tolist(),
    }

    figures.khat_plot(
        khat, out / "khat.png", title=f"PSIS k̂ of p(x,z)/q(z|x) for {n} points, S = {num_draws} draws each"
    )
    files["khat_plot"] = "khat.png"
    # A non-diagonal q or a mixture prior has no per-dimension KL (the evaluation reports NaN
    # there): no bar chart of NaNs, and the report says why.
    if np.isfinite(np.asarray(ev["kl_per_dim"], dtype=float)).any():
        figures.kl_per_dim_plot(np.asarray(ev["kl_per_dim"]), active, out / "kl_per_dim.png")
        files["kl_plot"] = "kl_per_dim.png"
    worst = np.argsort(khat)[::-1][: min(8, n)]
    numbers["psis"]["worst_points"] = worst.tolist()
    if run.data_info.get("is_image"):
        from ppvae.plotting.images import reconstruction_grid

        reconstruction_grid(
            x[worst],
            run.reconstruct(x[worst]),
            out / "worst.png",
            title="highest k̂: data (top) and reconstructions; k̂ = " + ", ".join(f"{k:.2f}" for k in khat[worst]),
        )
        files["worst"] = "worst.png"

    # The gaps measure q against the best diagonal Normal per point: defined for the diagonal
    # guide family only.
    guide = run.config.model.guide
    if npb is not None and gap_points > 0 and len(sites) > 1:
        say(f"skipping the inference gaps: they optimize one latent site per point, and this run has {len(sites)}")
    elif npb is not None and gap_points > 0 and guide != "diagonal":
        say(
            f"skipping the inference gaps: they compare q with the best diagonal Normal per point, "
            f"and this run's guide is {guide!r}"
        )
    elif npb is not None and gap_points > 0:
        m = min(gap_points, n)
        say(f"inference gaps for {m} points (a q optimized for each point alone)")
        vae, params = npb.jax_view(run.config, run.event_shape, run.trained)
        g = npb.local_gaps(vae, params, x[:m], seed=seed)
        numbers["gaps"] = {
            k: _plain(v) for k, v in g.items() if k not in ("loc", "scale", "local_loc", "local_scale", "elbo_trace")
        }
        figures.gaps_plot(np.asarray(g["approximation_gap"]), np.asarray(g["amortization_gap"]), out / "gaps.png")
        files["gaps_plot"] = "gaps.png"

    if reference == "nuts":
        m = min(reference_points, n)
        say(f"reference posterior by NUTS (4 chains) for {m} points")
        vae, params = npb.jax_view(run.config, run.event_shape, run.trained)
        ref = npb.nuts_reference(vae, params, x[:m], seed=seed, progress=progress, convergence=arviz_io.rhat_ess)
        if guide == "diagonal":
            cmp = npb.compare_to_q(ref["z"], loc[:m], scale[:m])
        else:  # q is not the encoder's Normal: its mean and sd per dimension from its draws
            zq = d["z"][:, :m]
            cmp = npb.compare_to_q(ref["z"], zq.mean(0), zq.std(0, ddof=1))
        numbers["reference"] = {
            "method": "NUTS (NumPyro), decoder frozen",
            "points": m,
            "chains": int(ref["z"].shape[0]),
            "draws": int(ref["z"].shape[1]),
            "max_rhat": float(np.max(ref["rhat"])),
            "min_ess_bulk": float(np.min(ref["ess_bulk"])),
            "min_ess_tail": float(np.min(ref["ess_tail"])),
            "divergences": int(ref["divergences"]),
            "seconds": float(ref["seconds"]),
            "q_vs_nuts": {k: _plain(v) for k, v in cmp.items()},
        }
        z_ref = np.asarray(ref["z"])  # (chains, draws, m, Z)
        flat = [z_ref[:, :, k].reshape(-1, z_ref.shape[-1]) for k in range(m)]
        q_draws = [d["z"][:, k] for k in range(m)]
        # The two most informative dimensions: highest KL, or (no per-dimension KL) the
        # highest variance of the posterior mean across points.
        kl_per_dim = np.asarray(ev["kl_per_dim"], dtype=float)
        kl_dims = np.argsort(kl_per_dim if np.isfinite(kl_per_dim).all() else variance)[::-1]
        dims = (int(kl_dims[0]), int(kl_dims[1])) if len(kl_dims) > 1 else (0, 0)
        figures.pair_overlay(
            flat, q_draws, dims, out / "q_vs_nuts.png", labels=[f"point {k} (k̂ {khat[k]:.2f})" for k in range(m)]
        )
        files["pair_plot"] = "q_vs_nuts.png"

    numbers["seconds"] = time.perf_counter() - started
    numbers["files"] = files
    atomic_write_json(out / "diagnostics.json", numbers)
    files["json"] = "diagnostics.json"
    write_report(out / "report.md", numbers, files)
    files["report"] = "report.md"
    return Diagnostics(out=out, numbers=numbers, files=files)
