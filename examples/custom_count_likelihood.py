"""A custom count likelihood, written once, trained on both backends, against the built-ins.

MNIST grey levels are integers 0-255, so a digit can be modelled as 784 counts. A
Binomial over 255 trials per pixel fits that exactly: its support is 0-255 (no mass
wasted above 255) and its variance 255·p·(1 - p) vanishes for pixels that are surely
black or surely white. It is declared once as a ``ppvae.Portable`` likelihood (its
constants and its distribution, nothing backend-specific) and trained with Pyro and
with NumPyro; the built-in count likelihoods ``poisson`` (variance = mean) and
``negative_binomial`` (a learned dispersion per pixel) are trained on the same data.
All read raw counts (``data.scale = "none"``), so their held-out log p(x) are in the
same units and comparable. The script prints the table and writes, in ``--out``:

- ``counts-reconstructions.png``: held-out digits and their reconstructions under each likelihood;
- ``counts-samples.png``: samples of each likelihood, side by side.

    python examples/custom_count_likelihood.py            # four runs, a few minutes on 2 cores
    python examples/custom_count_likelihood.py --tiny     # a smoke run (300 digits, 1 epoch), seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ppvae
from ppvae.data.standard import save_embedded_sample
from ppvae.plotting import labelled_rows, side_by_side

SPEC = Path(__file__).resolve().parents[1] / "models" / "mlp-400.toml"


@ppvae.register("likelihood", "grey_binomial")
class GreyLevelBinomial(ppvae.Portable):
    """Binomial(total_count, sigmoid(decoder output)) on every value: grey levels as counts of 0-255."""

    support = "count"

    def __init__(self, event_shape, total_count=255):
        self.event_rank = len(event_shape)
        self.constant("total_count", np.full(tuple(event_shape), float(total_count)))

    def distribution(self, dist, ops, p, out):
        return dist.Binomial(total_count=p["total_count"], logits=out).to_event(self.event_rank)

    def mean(self, dist, ops, p, out):
        return p["total_count"] * ops.sigmoid(out)


#: (row label, likelihood, backend) of every run.
RUNS = (
    ("grey_binomial (pyro)", "grey_binomial", "pyro"),
    ("grey_binomial (numpyro)", "grey_binomial", "numpyro"),
    ("poisson", "poisson", "pyro"),
    ("negative_binomial", "negative_binomial", "pyro"),
)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 digits, tiny networks, 1 epoch: seconds")
    parser.add_argument("--out", default="runs/count-likelihoods", help="folder for the runs and the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Raw grey levels as counts: no scaling, no binarization.
    overrides = {"data.scale": "none", "data.binarize": "none", "train.epochs": 10, "train.eval_num_samples": 200}
    if args.tiny:
        overrides.update(
            {
                "data.source": save_embedded_sample(out),
                "train.epochs": 1,
                "train.batch_size": 64,
                "train.eval_num_samples": 10,
                "model.latent_dim": 4,
                "model.encoder_options.hidden": [32],
                "model.decoder_options.hidden": [32],
            }
        )
    runs, results = {}, {}
    for label, likelihood, backend in RUNS:
        run = ppvae.fit(
            SPEC,
            out=out / f"{likelihood}-{backend}",
            force=True,
            likelihood=likelihood,
            backend=backend,
            overrides=overrides,
        )
        runs[label] = run
        results[label] = {
            **run.summary["evaluation"],
            "likelihood": likelihood,
            "backend": backend,
            "train_seconds": run.summary["train_seconds"],
        }

    k = next(iter(results.values()))["num_samples"]
    print(f"\nheld-out, nats per digit of 784 grey-level counts (log p(x): IWAE bound, K = {k})")
    print(
        f"{'likelihood':26s} {'ELBO':>10s} {'log p(x)':>10s} {'± s.e.':>7s} {'bits/dim':>9s} {'active':>7s} "
        f"{'train s':>8s}"
    )
    for label, r in sorted(results.items(), key=lambda kv: -kv[1]["heldout_log_px"]):
        print(
            f"{label:26s} {r['heldout_elbo']:10.1f} {r['heldout_log_px']:10.1f} {r['heldout_log_px_stderr']:7.1f} "
            f"{r['bits_per_dim']:9.3f} {r['active_units']:7d} {r['train_seconds']:8.1f}"
        )
    a, b = results["grey_binomial (pyro)"], results["grey_binomial (numpyro)"]
    print(
        f"\nthe one Binomial definition gives {a['heldout_log_px']:.1f} (pyro) and {b['heldout_log_px']:.1f} "
        "(numpyro): the same model, trained by two backends from different random initial weights"
    )

    first = next(iter(runs.values()))
    x = first.heldout()[:10]
    rows = {"data": x / 255.0, **{label: run.reconstruct(x) / 255.0 for label, run in runs.items()}}
    pictures = [
        labelled_rows(
            rows, out / "counts-reconstructions.png", "held-out digits and their reconstructions (mean of p(x|z) / 255)"
        ),
        side_by_side(
            {label: run.sample(36, seed=0) / 255.0 for label, run in runs.items()},
            out / "counts-samples.png",
            "36 samples each: means of p(x|z) / 255, z ~ N(0, I)",
        ),
    ]
    print("pictures: " + ", ".join(map(str, pictures)))
    return results


if __name__ == "__main__":
    main()
