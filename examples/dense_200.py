"""A dense VAE with a 200-dimensional latent, and why its KL must be summed over dimensions.

models/dense-200.toml is the smallest VAE there is: one dense layer from the 784 pixels
to the (loc, scale) of a 200-dimensional q(z|x), one dense layer back to 784 logits.
Its ELBO charges the KL of every latent dimension, summed, per image. A common slip
is to *average* the KL over the 200 dimensions while the reconstruction is summed over
pixels: that weights the KL 200 times too little (β = 1/200), and the model becomes an
autoencoder with a little noise. This script trains both and shows:

- held-out ELBO (reconstruction and KL) and log p(x) of both (the averaged-KL model is
  scored with the true ELBO, so the numbers are comparable): the averaged-KL model
  reconstructs almost perfectly but pays for it with a KL many times larger, and its
  log p(x) is far lower;
- the KL of every latent dimension, sorted (``dense-kl-per-dim.png`` in ``--out``): with
  the KL summed, the total stays at tens of nats, spread thinly (a nat or less per
  dimension, the least used ones close to the prior); averaged, every dimension carries
  several nats;
- reconstructions and samples side by side (``dense-reconstructions.png``,
  ``dense-samples.png``): the averaged-KL model's codes are far from the prior, so
  decoding z ~ N(0, I) gives noise. (One dense layer is a weak decoder: even the proper
  model's samples are blotchy; examples/mlp_400_200.py has hidden layers.)

    python examples/dense_200.py              # two runs, a few minutes on 2 cores
    python examples/dense_200.py --tiny       # a smoke run (300 digits, 1 epoch), seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ppvae
from ppvae import plotting as plots
from ppvae.data.standard import save_embedded_sample
from ppvae.plotting import labelled_rows, side_by_side

SPEC = Path(__file__).resolve().parents[1] / "models" / "dense-200.toml"


def kl_per_dim(results: dict, path: Path) -> Path:
    """The held-out KL of every latent dimension, largest first, one line per run (log scale)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, r) in enumerate(results.items()):
        kl = np.sort(np.asarray(r["kl_per_dim"]))[::-1]
        ax.step(
            np.arange(1, len(kl) + 1),
            np.maximum(kl, 1e-4),
            where="mid",
            color=f"C{i}",
            label=f"{name}: total KL {r['kl']:.1f} nats",
        )
    ax.set_yscale("log")
    ax.set_xlim(0.5, len(kl) + 0.5)
    ax.set_xlabel("latent dimension, sorted by its KL")
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)), nats")
    ax.legend(frameon=False, fontsize=9)
    ax.set_title("KL per latent dimension, held-out digits: how much each dimension is used", fontsize=11)
    return plots.save_figure(fig, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 digits, 1 epoch, a 20-D latent: seconds")
    parser.add_argument("--out", default="runs/dense-200", help="folder for the two runs and the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)

    overrides = {}
    if args.tiny:
        overrides = {
            "data.source": save_embedded_sample(out),
            "train.epochs": 1,
            "train.batch_size": 64,
            "train.eval_num_samples": 10,
            "model.latent_dim": 20,
        }
    dims = ppvae.build_config(SPEC, overrides).model.latent_dim
    variants = {"KL summed": 1.0, f"KL averaged (β = 1/{dims})": 1.0 / dims}
    runs, results = {}, {}
    for name, beta in variants.items():
        run = ppvae.fit(
            SPEC,
            out=out / ("kl-sum" if beta == 1.0 else "kl-mean"),
            force=True,
            overrides={**overrides, "train.beta": beta},
        )
        runs[name] = run
        results[name] = {**run.summary["evaluation"], "beta": beta}

    print(
        f"\nheld-out, nats per digit ({dims}-D latent; log p(x): IWAE bound, "
        f"K = {next(iter(results.values()))['num_samples']})"
    )
    print(f"{'':26s} {'ELBO':>8s} {'reconstruction':>15s} {'KL':>7s} {'log p(x)':>9s} {'active units':>13s}")
    for name, r in results.items():
        print(
            f"{name:26s} {r['heldout_elbo']:8.1f} {r['reconstruction']:15.1f} {r['kl']:7.1f} "
            f"{r['heldout_log_px']:9.1f} {r['active_units']:6d} of {dims}"
        )
    print()
    for name, r in results.items():
        kl = np.sort(np.asarray(r["kl_per_dim"]))[::-1]
        needed = int(np.searchsorted(np.cumsum(kl), 0.9 * kl.sum()) + 1)
        print(
            f"{name}: {needed} of {dims} dimensions hold 90 % of the KL; the least used one has "
            f"{kl[-1]:.3f} nats, the most used {kl[0]:.2f}"
        )

    first = next(iter(runs.values()))
    x = first.heldout()[:10]
    pictures = [
        kl_per_dim(results, out / "dense-kl-per-dim.png"),
        labelled_rows(
            {"data": x, **{name: run.reconstruct(x) for name, run in runs.items()}},
            out / "dense-reconstructions.png",
            "held-out digits and their reconstructions",
        ),
        side_by_side(
            {name: run.sample(64, seed=0) for name, run in runs.items()},
            out / "dense-samples.png",
            "64 samples each: means of p(x|z), z ~ N(0, I)",
        ),
    ]
    print("pictures: " + ", ".join(map(str, pictures)))
    return results


if __name__ == "__main__":
    main()
