"""Pictures of the diagnostics: k-hat per point, KL per latent dimension, gaps, q vs NUTS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ppvae.plotting.style import new_figure, save_figure

__all__ = ["khat_plot", "kl_per_dim_plot", "gaps_plot", "pair_overlay"]


def khat_plot(khat: np.ndarray, path: str | Path, *, title: str | None = None) -> Path:
    """Pareto k-hat of every evaluated point, with the 0.5 and 0.7 thresholds."""
    fig = new_figure(8, 4, layout="constrained")
    ax = fig.add_subplot()
    idx = np.arange(len(khat))
    zones = [
        (khat <= 0.5, "tab:green", "k̂ ≤ 0.5 good"),
        ((khat > 0.5) & (khat <= 0.7), "tab:orange", "0.5 < k̂ ≤ 0.7 usable"),
        (khat > 0.7, "tab:red", "k̂ > 0.7 unreliable"),
    ]
    for mask, color, label in zones:
        ax.scatter(idx[mask], khat[mask], s=14, color=color, label=f"{label} ({int(mask.sum())})")
    for level in (0.5, 0.7):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("evaluated point")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("PSIS k̂ of p(x, z) / q(z|x)")
    ax.set_title(title or "Pareto k̂ per datapoint")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def kl_per_dim_plot(kl: np.ndarray, active: np.ndarray, path: str | Path, *, title: str | None = None) -> Path:
    """KL(q || p) per latent dimension (averaged over points); inactive dimensions in grey."""
    fig = new_figure(max(5, 0.35 * len(kl) + 2), 3.6, layout="constrained")
    ax = fig.add_subplot()
    colors = np.where(active, "tab:blue", "lightgrey")
    ax.bar(np.arange(len(kl)), kl, color=colors)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_xticks(np.arange(len(kl)))
    ax.set_title(title or "KL per latent dimension (grey: inactive, collapsed to the prior)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def gaps_plot(
    approximation: np.ndarray, amortization: np.ndarray, path: str | Path, *, title: str | None = None
) -> Path:
    """Per point: approximation gap (family) and amortization gap (encoder), stacked."""
    order = np.argsort(approximation + amortization)[::-1]
    fig = new_figure(8, 4, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(order))
    ax.bar(x, approximation[order], color="tab:purple", label="approximation gap: log p(x) − ELBO(q*)")
    ax.bar(
        x,
        amortization[order],
        bottom=approximation[order],
        color="tab:orange",
        label="amortization gap: ELBO(q*) − ELBO(q)",
    )
    ax.set_xlabel("evaluated point (sorted by total gap)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("nats")
    ax.set_title(title or "inference gaps per point")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def pair_overlay(
    reference: list[np.ndarray],
    amortized: list[np.ndarray],
    dims: tuple[int, int],
    path: str | Path,
    *,
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """For each point, NUTS draws and q(z|x) draws over two latent dimensions."""
    n = len(reference)
    fig = new_figure(3.2 * n, 3.4, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    i, j = dims
    for k, ax in enumerate(axes):
        ax.scatter(reference[k][:, i], reference[k][:, j], s=3, alpha=0.35, color="black", label="NUTS")
        ax.scatter(amortized[k][:, i], amortized[k][:, j], s=3, alpha=0.35, color="tab:orange", label="q(z|x)")
        ax.set_title(labels[k] if labels else f"point {k}", fontsize=9)
        ax.set_xlabel(f"z[{i}]")
        ax.set_ylabel(f"z[{j}]")
    axes[0].legend(fontsize=7, markerscale=3)
    fig.suptitle(title or "posterior draws: NUTS (reference) vs the encoder's q(z|x)")
    return save_figure(fig, path)
