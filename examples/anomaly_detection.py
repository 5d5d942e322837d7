"""Anomaly detection with a VAE: train on the digits 0-8, then flag the 9s.

A VAE trained on normal data gives unusual inputs a low likelihood, so -log p(x) (or
-ELBO) of a new point is an anomaly score; so is how far from the normal data the encoder
puts it (-log density of its posterior mean under a Gaussian mixture fit to the training
split's). Here "normal" is the embedded MNIST digits 0-8 and the anomalies are the 9s the
model never saw. The script

1. splits the embedded digits: 80% of the 0-8s for training (``digits0-8.npz``); the
   other 20% and every 9 form the test set (``test.npz``, with labels);
2. trains a VAE (Pyro backend) on ``digits0-8.npz``;
3. scores the test set, reports the ROC AUC of 9s against 0-8s for the three scores,
   and writes ``scores.csv``, ``scores.png`` (histograms by class, ROC curves),
   ``latent.png`` (the test set's latent means by label) and ``result.json``.

What to expect (bench/RESULTS.md has the measured figures): the two likelihood scores
are near chance here. A VAE's likelihood of a binarized digit mostly says how simple it
is (1s score best, whatever the training data), and a 9 is as simple as a typical 0-8.
The latent-density score does separate them: a 9 is encoded away from where the 0-8s go.

    python examples/anomaly_detection.py            # the full run (see bench/RESULTS.md for its time)
    python examples/anomaly_detection.py --tiny     # a smoke run in seconds

The scoring step from the shell, on the same files:

    ppvae score runs/anomaly/run --data runs/anomaly/test.npz --anomalous 9 --latent-density --out scores.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import ppvae
from ppvae.data.standard import load_embedded
from ppvae.runs.atomic import atomic_write_json
from ppvae.plotting.latents import plot_latent
from ppvae.analysis.scoring import SCORES, score_data

#: The class treated as the anomaly.
ANOMALOUS = 9


def split_digits(out: Path, *, tiny: bool, seed: int = 0) -> tuple[Path, Path]:
    """Write ``digits0-8.npz`` (training) and ``test.npz`` (held-out 0-8s and all 9s) under ``out``."""
    raw = load_embedded()
    x, y = raw.x, raw.labels
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(y != ANOMALOUS))
    nines = rng.permutation(np.flatnonzero(y == ANOMALOUS))
    n_test = len(normal) // 5
    test_normal, train = normal[:n_test], normal[n_test:]
    if tiny:
        train, test_normal, nines = train[:400], test_normal[:100], nines[:50]
    test = np.concatenate([test_normal, nines])
    out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = out / "digits0-8.npz", out / "test.npz"
    np.savez(train_file, x=x[train], y=y[train])
    np.savez(test_file, x=x[test], y=y[test])
    return train_file, test_file


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a smoke run: little data, 1 epoch, tiny networks")
    parser.add_argument("--out", default="runs/anomaly", help="folder for the data files, run and pictures")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of the full run")
    parser.add_argument("--num-samples", type=int, default=1000, help="draws of q(z|x) per scored point")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    train_file, test_file = split_digits(out, tiny=args.tiny)

    overrides = {"data.heldout_fraction": 0.1}
    if args.tiny:
        overrides.update(
            {
                "model.encoder_options.hidden": [64],
                "model.decoder_options.hidden": [64],
                "train.eval_num_samples": 10,
                "train.batch_size": 64,
                "train.device": "cpu",
            }
        )
    epochs = 1 if args.tiny else args.epochs
    num_samples = 20 if args.tiny else args.num_samples
    run = ppvae.fit(
        data=str(train_file),
        backend="pyro",
        latent_dim=20,
        epochs=epochs,
        out=out / "run",
        force=True,
        overrides=overrides,
    )

    x, labels = run.load_data(str(test_file))
    report = score_data(
        run,
        x,
        labels=labels,
        anomalous=[ANOMALOUS],
        out=out / "scores.csv",
        force=True,
        num_samples=num_samples,
        seed=0,
        latent_density=True,
        class_names=("normal (digits 0-8)", f"anomalous (digit {ANOMALOUS})"),
    )
    plot_latent(run, x, out / "latent.png", labels=labels, source="test set: held-out 0-8s and all 9s")
    result = {
        **report.to_dict(),
        "epochs": epochs,
        "wall_seconds": time.perf_counter() - started,
        "run": str(run.path),
        "train_seconds": run.summary["train_seconds"],
        "heldout_elbo_of_0_8": run.summary["evaluation"]["heldout_elbo"],
    }
    atomic_write_json(out / "result.json", result)
    aucs = ", ".join(f"{SCORES[k]} {v:.3f}" for k, v in report.roc_auc.items())
    print(
        f"ROC AUC of {ANOMALOUS}s vs 0-8s ({result['num_anomalous']} vs {result['num_normal']} test points, "
        f"K = {num_samples}): {aucs}"
    )
    print(f"wrote {report.csv}, {report.picture} and {out / 'latent.png'} in {result['wall_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
