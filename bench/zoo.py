"""Richer priors and bounds against the standard VAE, at equal epochs (protocol MNIST-10k v1).

Every variant is the reference ``mlp-400`` spec (models/mlp-400.toml) with one change:

* ``standard``  -- standard Normal prior, analytic-KL ELBO (the reference itself);
* ``vamp``      -- VampPrior with K pseudo-inputs (``model.prior = "vamp"``);
* ``iwae``      -- trained on the IWAE bound with K = 5 samples;
* ``dreg``      -- the same bound with doubly-reparameterized gradients.

Each is trained for the same number of epochs with the same seeds on the same split, then
scored on the 2,000 held-out images by the importance-weighted bound with K samples
(log p(x), the protocol's "held-out log p(x)"). The table gives mean ± standard deviation
over seeds and the paired difference to ``standard`` (same seed) with its standard error.

Usage::

    python bench/zoo.py                          # 30 epochs, seeds 0,1,2, K = 1000
    python bench/zoo.py --epochs 5 --seeds 0 --variants standard,vamp   # quick look

Writes ``bench/results/zoo.json`` and prints the Markdown table for ``bench/RESULTS.md``.
This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from core import PROTOCOL, machine  # noqa: E402

SPEC = HERE.parent / "models" / "mlp-400.toml"

#: variant -> overrides on top of the mlp-400 spec
VARIANTS = {
    "standard": {},
    "vamp": {"model.prior": "vamp", "model.prior_options.num_components": 500},
    "iwae": {"train.elbo": "iwae", "train.num_particles": 5},
    "dreg": {"train.elbo": "dreg", "train.num_particles": 5},
}


def run_variant(name: str, seed: int, epochs: int, backend: str, num_samples: int) -> dict:
    import ppvae

    overrides = {
        **VARIANTS[name],
        "train.seed": seed,
        "train.epochs": epochs,
        "train.backend": backend,
        "train.device": "cpu",
        "train.eval_num_samples": 1,
    }
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = ppvae.fit(SPEC, out=Path(tmp) / name, pictures=False, overrides=overrides)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ev = run.evaluate(num_samples=num_samples, seed=0)
        eval_seconds = time.perf_counter() - start
    return {
        "variant": name,
        "seed": seed,
        "epochs": epochs,
        "backend": backend,
        "heldout_elbo": ev["heldout_elbo"],
        "heldout_log_px": ev["heldout_log_px"],
        "num_samples": num_samples,
        "kl": ev.get("kl"),
        "active_units": ev.get("active_units"),
        "fit_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def table(rows: list[dict]) -> str:
    by = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    base = by.get("standard", {})
    lines = [
        "| variant | held-out ELBO | held-out log p(x) (K) | paired Δ log p(x) vs standard (± SE) "
        "| active units | fit s (per seed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in by.items():
        seeds = sorted(runs)
        elbo = [runs[s]["heldout_elbo"] for s in seeds]
        lpx = [runs[s]["heldout_log_px"] for s in seeds]
        diffs = [runs[s]["heldout_log_px"] - base[s]["heldout_log_px"] for s in seeds if s in base]
        if name == "standard" or not diffs:
            delta = "—"
        else:
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
            delta = f"{statistics.fmean(diffs):+.2f} ± {se:.2f}"
        units = [runs[s]["active_units"] for s in seeds if runs[s]["active_units"] is not None]
        lines.append(
            f"| {name} | {_mean_sd(elbo)} | {_mean_sd(lpx)} ({runs[seeds[0]]['num_samples']}) | {delta} "
            f"| {statistics.fmean(units) if units else '—'} "
            f"| {statistics.fmean(runs[s]['fit_seconds'] for s in seeds):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--backend", default="numpyro", choices=["pyro", "numpyro"])
    parser.add_argument("--num-samples", type=int, default=1000, help="K for held-out log p(x)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "zoo.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    rows = []
    for seed in seeds:
        for name in variants:
            row = run_variant(name, seed, args.epochs, args.backend, args.num_samples)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "protocol": PROTOCOL,
        "spec": "models/mlp-400.toml",
        "machine": machine(),
        "variants": {v: VARIANTS[v] for v in variants},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
