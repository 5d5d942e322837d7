"""The diagnostics report: tables, pictures and what they mean, in Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppvae.runs.atomic import atomic_write_text

__all__ = ["write_report", "psis_verdict", "gap_verdict"]


def psis_verdict(share_bad: float, share_mid: float) -> str:
    """One sentence on the k-hat shares (thresholds of Yao et al. 2018)."""
    if share_bad > 0.5:
        return (
            "q(z|x) is an unreliable importance proposal for most points: the posterior has heavier "
            "tails or another shape than the Gaussian q, so importance-sampled log p(x) for these points "
            "has high variance and the IWAE bound is loose."
        )
    if share_bad > 0.1:
        return (
            "q(z|x) is a good proposal for many points but unreliable for a sizeable minority (k̂ > 0.7); "
            "look at the worst inputs: they are often atypical or ambiguous data."
        )
    if share_bad + share_mid > 0.1:
        return "q(z|x) is usable everywhere and good for most points; a few are borderline (0.5 < k̂ ≤ 0.7)."
    return "q(z|x) is a reliable importance proposal for nearly every point (k̂ ≤ 0.5)."


def gap_verdict(approximation: float, amortization: float) -> str:
    """One sentence on which gap dominates (Cremer, Li & Duvenaud 2018)."""
    if amortization > 2 * max(approximation, 1e-9):
        return (
            "The amortization gap dominates: a q fitted to each point alone does much better than the "
            "encoder's, so a better encoder (capacity, training time, or iterative refinement) would help "
            "more than a richer variational family."
        )
    if approximation > 2 * max(amortization, 1e-9):
        return (
            "The approximation gap dominates: even the best diagonal Gaussian per point is far from the "
            "posterior, so a richer family (full-rank Gaussian, a flow) would help more than a better encoder."
        )
    return "The two gaps are of similar size: both the family and the encoder leave room for improvement."


def _fmt(v, digits=3) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def write_report(path: str | Path, numbers: dict, files: dict[str, str]) -> Path:
    """Write ``report.md`` from the numbers of :func:`ppvae.analysis.diagnostics.diagnose`."""
    psis, col = numbers["psis"], numbers["collapse"]
    lines = [
        "# How good is q(z|x)?",
        "",
        f"Run `{numbers['run']}` ({numbers['backend']} backend); {numbers['num_points']} points, "
        f"{numbers['num_draws']} draws from q(z|x) each. Numbers: `diagnostics.json`; draws, reconstructions "
        f"and log-likelihoods for ArviZ: `{files.get('inference_data', 'inference_data.nc')}` "
        "(`arviz.from_netcdf`).",
        "",
        "## Importance sampling with q: PSIS k̂ per point",
        "",
        "| k̂ ≤ 0.5 (good) | 0.5 < k̂ ≤ 0.7 (usable) | k̂ > 0.7 (unreliable) | median k̂ | max k̂ |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {psis['share_below_0.5']:.0%} | {psis['share_0.5_to_0.7']:.0%} | {psis['share_above_0.7']:.0%} | "
        f"{psis['median']:.2f} | {psis['max']:.2f} |",
        "",
        psis_verdict(psis["share_above_0.7"], psis["share_0.5_to_0.7"]),
        "",
        f"![k-hat per point]({files.get('khat_plot', 'khat.png')})",
        "",
    ]
    if "worst" in files:
        lines += [
            "The inputs with the highest k̂, above their reconstructions:",
            "",
            f"![worst inputs]({files['worst']})",
            "",
        ]
    est = numbers["estimates_from_draws"]
    lines += [
        f"From the same draws: ELBO {est['elbo']:.2f} and IWAE bound {list(est.values())[1]:.2f} nats per point.",
        "",
    ]
    kl = np.asarray(col["kl_per_dim"], dtype=float)
    inactive = col["latent_dim"] - col["active_units"]
    lines += [
        "## Posterior collapse",
        "",
        f"{col['active_units']} of {col['latent_dim']} latent dimensions are active (the posterior mean varies "
        "across data by more than 0.01). "
        + (
            f"{inactive} dimension(s) carry almost no information: q equals the prior there and the decoder "
            "ignores them (posterior collapse)."
            if inactive
            else "No dimension has collapsed to the prior."
        )
        + (
            f" KL per dimension ranges from {np.nanmin(kl):.3f} to {np.nanmax(kl):.3f} nats "
            f"(total {np.nansum(kl):.2f})."
            if "kl_plot" in files
            else " The KL does not split into per-dimension terms for this q(z|x) and prior (a non-diagonal "
            "guide or a mixture prior), so activity is judged by the posterior mean alone."
        ),
        "",
    ]
    if "kl_plot" in files:
        lines += [f"![KL per latent dimension]({files['kl_plot']})", ""]
    if "gaps" in numbers:
        g = numbers["gaps"]
        approx, amort = float(np.mean(g["approximation_gap"])), float(np.mean(g["amortization_gap"]))
        lines += [
            "## Inference gaps (Cremer, Li & Duvenaud 2018)",
            "",
            "| points | log p(x) (IWAE) | ELBO of q* (per point) | ELBO of q (encoder) | approximation gap | "
            "amortization gap |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {len(g['approximation_gap'])} | {np.mean(g['log_px']):.2f} | {np.mean(g['elbo_local']):.2f} | "
            f"{np.mean(g['elbo_amortized']):.2f} | {approx:.2f} | {amort:.2f} |",
            "",
            gap_verdict(approx, amort),
            "",
            f"![gaps per point]({files.get('gaps_plot', 'gaps.png')})",
            "",
        ]
    if "reference" in numbers:
        r = numbers["reference"]
        converged = r["max_rhat"] < 1.01
        lines += [
            "## Reference posterior by NUTS",
            "",
            f"{r['method']}: {r['points']} points, {r['chains']} chains x {r['draws']} draws, "
            f"{r['seconds']:.0f} s. Max R-hat {r['max_rhat']:.3f}, min bulk ESS {r['min_ess_bulk']:.0f}, "
            f"min tail ESS {r['min_ess_tail']:.0f}, {r['divergences']} divergences: "
            + (
                "the chains agree, so the reference can be trusted."
                if converged
                else "R-hat ≥ 1.01: the chains disagree; treat the reference with care (run longer)."
            ),
            "",
            "| q versus NUTS | value |",
            "| --- | ---: |",
        ]
        for key, value in r["q_vs_nuts"].items():
            if not isinstance(value, (list, dict)):
                lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)} |")
        ratio = r["q_vs_nuts"].get("median_sd_ratio")
        err = r["q_vs_nuts"].get("mean_abs_standardized_error")
        if ratio is not None:
            shape = "too narrow" if ratio < 0.9 else "too wide" if ratio > 1.1 else "about as wide as"
            lines += [
                "",
                f"q(z|x) is {shape}{' the posterior' if shape.startswith('about') else ''}: its sd is "
                f"{ratio:.2f} times the NUTS sd (median over points and dimensions)"
                + (
                    ", the under-dispersion that fitting KL(q || p) favours and the reason importance "
                    "weights are heavy-tailed (high k̂)"
                    if ratio < 0.9
                    else ""
                )
                + (f"; its means are off by {err:.2f} posterior sd on average." if err is not None else "."),
            ]
        lines += ["", f"![q vs NUTS]({files.get('pair_plot', 'q_vs_nuts.png')})", ""]
    lines += [f"_Computed in {numbers['seconds']:.0f} s._", ""]
    atomic_write_text(path, "\n".join(lines))
    return Path(path)
