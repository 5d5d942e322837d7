"""Training throughput of the Pyro backend on 1 and 2 processes (``ppvae fit --num-processes``).

Protocol MNIST-10k v1 (the embedded digits: 8,000 training images), the mlp-400 VAE
(Z = 20, Bernoulli, Adam 1e-3) on the CPU. Configurations, each a fresh ``ppvae fit``
run, interleaved so that a change in the machine's load hits all of them alike:

- ``1 process``: batch 128, ``OMP_NUM_THREADS=2`` (one process using both cores), and the
  same with 1 thread (on a loaded machine a second thread can cost more than it brings);
- ``2 processes, batch 64 each``: the same global batch of 128 (the same optimization),
  ``OMP_NUM_THREADS=1`` per process;
- ``2 processes, batch 128 each``: the DDP convention (batch per process), a global
  batch of 256.

Images per second is the median over the epochs after the first (warm-up) of
``metrics.jsonl``'s ``images_per_s`` (all processes' images over rank 0's epoch time).

Usage::

    python bench/distributed.py [--epochs 4] [--repeats 2] [--out bench/results/distributed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [
    {"name": "1 process, batch 128", "processes": 1, "batch_size": 128, "threads": 2},
    {"name": "1 process, batch 128, 1 thread", "processes": 1, "batch_size": 128, "threads": 1},
    {"name": "2 processes, batch 64 each", "processes": 2, "batch_size": 64, "threads": 1},
    {"name": "2 processes, batch 128 each", "processes": 2, "batch_size": 128, "threads": 1},
]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_once(cfg: dict, epochs: int, workdir: Path) -> dict:
    out = workdir / f"run-{cfg['processes']}-{cfg['batch_size']}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "ppvae",
        "fit",
        "--epochs",
        str(epochs),
        "--batch-size",
        str(cfg["batch_size"]),
        "--device",
        "cpu",
        "-q",
        "--out",
        str(out),
        "--set",
        "train.eval_num_samples=1",
    ]
    if cfg["processes"] > 1:
        cmd += ["--num-processes", str(cfg["processes"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"])}
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records[1:]]
    return {"images_per_s": statistics.median(rates), "epoch_rates": rates, "wall_seconds": wall, "load_after": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distributed.json")
    args = parser.parse_args()

    import torch

    result = {
        "protocol": "MNIST-10k v1",
        "model": "mlp-400, Z = 20, Bernoulli, Adam 1e-3",
        "device": "cpu",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "torch": torch.__version__,
        "epochs": args.epochs,
        "load_before": load(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="ppvae-bench-ddp-") as tmp:
        for rep in range(args.repeats):
            for cfg in CONFIGS:
                res = {**cfg, "repeat": rep, **run_once(cfg, args.epochs, Path(tmp))}
                print(f"{cfg['name']:30s} {res['images_per_s']:8.0f} images/s  (load {res['load_after']})", flush=True)
                result["runs"].append(res)
    result["load_after"] = load()
    summary = {}
    for cfg in CONFIGS:
        rates = [r["images_per_s"] for r in result["runs"] if r["name"] == cfg["name"]]
        summary[cfg["name"]] = {"images_per_s_median": statistics.median(rates), "images_per_s": rates}
    base = summary[CONFIGS[0]["name"]]["images_per_s_median"]
    for s in summary.values():
        s["ratio_to_1_process"] = s["images_per_s_median"] / base
    result["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
