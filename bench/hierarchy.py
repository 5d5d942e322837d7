"""Two stochastic layers against one of the same width, at equal epochs (issue 14).

Protocol MNIST-10k v1 (``../shared/benchmarks/PROTOCOL.md``): both models are the IWAE
paper's tanh networks, trained on the importance-weighted bound with the same K, the same
epochs, batches and seeds, on the Pyro backend, and scored on the held-out split by the
IWAE bound with ``--eval-samples`` samples per image (the held-out split is read only for
that final figure: no epoch or checkpoint is chosen here).

- ``one-layer``: 784-200-200-50 (tanh), z of 50 units (``models/iwae.toml`` with the paper's networks);
- ``two-layer``: ``models/iwae-2layer.toml``, z1 of 100 and z2 of 50 units.

Usage::

    python bench/hierarchy.py                       # 100 epochs, seeds 0,1,2, K = 1000
    python bench/hierarchy.py --epochs 2 --seeds 0 --eval-samples 10 --out /tmp/h.json   # a smoke run

Writes ``bench/results/hierarchy.json`` (atomically, after every run) and prints a
Markdown table for ``bench/RESULTS.md``. Runs on one thread (``--threads``), so a busy
machine changes the seconds, not the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ONE_LAYER = {
    "spec": "models/iwae.toml",
    "overrides": {
        "model.latent_dim": 50,
        "model.encoder_options.hidden": [200, 200],
        "model.encoder_options.activation": "tanh",
        "model.decoder_options.hidden": [200, 200],
        "model.decoder_options.activation": "tanh",
    },
}
TWO_LAYER = {"spec": "models/iwae-2layer.toml", "overrides": {}}
MODELS = {"one-layer": ONE_LAYER, "two-layer": TWO_LAYER}


def _write(path: Path, payload: dict) -> None:
    from ppvae.runs.atomic import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, payload)


def run_one(name: str, seed: int, args) -> dict:
    import ppvae

    model = MODELS[name]
    overrides = {
        **model["overrides"],
        "train.num_particles": args.num_particles,
        "train.eval_num_samples": 1,  # the figure is computed below, with --eval-samples
        "train.init_decoder_bias": args.init_decoder_bias,
    }
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = ppvae.fit(
            str(ROOT / model["spec"]),
            out=Path(tmp) / "run",
            epochs=args.epochs,
            seed=seed,
            overrides=overrides,
            pictures=False,
            progress=False,
        )
        seconds = time.perf_counter() - start
        result = run.evaluate(run.heldout(), num_samples=args.eval_samples, seed=0)
    return {
        "model": name,
        "seed": seed,
        "heldout_log_px": result["heldout_log_px"],
        "heldout_elbo": result["heldout_elbo"],
        "kl": result["kl"],
        "active_units": result["active_units"],
        "seconds": seconds,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num-particles", type=int, default=5, help="K of the training bound")
    parser.add_argument("--eval-samples", type=int, default=1000, help="K of the held-out log p(x)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--init-decoder-bias", action="store_true", help="both models start their decoder at the data's log-odds"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hierarchy.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    payload = {
        "protocol": "MNIST-10k v1",
        "command": "python bench/hierarchy.py " + " ".join(argv or []),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads},
        "epochs": args.epochs,
        "num_particles": args.num_particles,
        "eval_samples": args.eval_samples,
        "init_decoder_bias": args.init_decoder_bias,
        "runs": [],
        "complete": False,
    }
    for seed in seeds:
        for name in MODELS:
            row = run_one(name, seed, args)
            payload["runs"].append(row)
            _write(args.out, payload)
            print(
                f"{name} seed {seed}: log p(x) {row['heldout_log_px']:.2f}, ELBO {row['heldout_elbo']:.2f}, "
                f"{row['active_units']} active, {row['seconds']:.0f} s",
                flush=True,
            )
    payload["complete"] = True
    _write(args.out, payload)

    print(
        f"\nProtocol MNIST-10k v1, {args.epochs} epochs, IWAE K = {args.num_particles}, "
        f"held-out log p(x) by IWAE K = {args.eval_samples}, seeds {args.seeds}\n"
    )
    print("| model | held-out log p(x) | held-out ELBO | active units | seconds per run |")
    print("|---|---:|---:|---:|---:|")
    for name in MODELS:
        rows = [r for r in payload["runs"] if r["model"] == name]
        lp = [r["heldout_log_px"] for r in rows]
        sd = statistics.stdev(lp) if len(lp) > 1 else 0.0
        elbo = statistics.mean(r["heldout_elbo"] for r in rows)
        units = statistics.mean(r["active_units"] for r in rows)
        secs = statistics.mean(r["seconds"] for r in rows)
        print(f"| {name} | {statistics.mean(lp):.2f} ± {sd:.2f} | {elbo:.2f} | {units:.0f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
