"""NumPyro backend: training throughput on 1 vs N JAX devices (``train.num_devices``, issue 7).

Protocol MNIST-10k v1, mlp-400 (``models/mlp-400.toml``, Z = 20, Bernoulli), global batch
128, 8,000 training images with dynamic binarization. Each side is the NumPyro backend's
:class:`~ppvae.backends.numpyro.trainer.Trainer`; an epoch is ``Trainer.fit`` run for one
more epoch and timed by ``fit`` itself (the compiled epoch plus the rest step, until the
outputs are on the host; compilation, held-out ELBO and checkpoint excluded). The sides
run interleaved, one epoch each per round, the order alternating, after warm-up epochs.

On CPU the devices are XLA host devices (``--xla_force_host_platform_device_count``, set
here before JAX starts): they share the machine's cores, so this measures the cost of
the partitioned program (sharded gather, all-reduce) more than a speed-up; on N GPUs the
same program splits the work over N accelerators.

Usage::

    python bench/numpyro_sharding.py --devices 2 --rounds 8   # writes bench/results/numpyro_sharding.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOCOL = "MNIST-10k v1"
SPEC = HERE.parent / "models" / "mlp-400.toml"


def trainer(dataset, num_devices: int, device: str, run_dir: Path):
    from ppvae.spec import registry
    from ppvae.api import resolve_config, build_config
    from ppvae.backends.numpyro.trainer import Trainer

    registry.load_backend("numpyro")
    cfg = resolve_config(
        build_config(
            SPEC,
            {
                "train.backend": "numpyro",
                "train.device": device,
                "train.epochs": 10_000,
                "train.num_devices": num_devices,
            },
        )
    )
    return Trainer(cfg, dataset, run_dir, progress=False)


def one_epoch(tr) -> dict:
    """One more epoch through ``Trainer.fit``; its record (``seconds`` is fit's own timing)."""
    tr.fit(stop_after_steps=tr.state.step + 1)
    return tr.state.records[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2, help="N of the N-device side (default 2)")
    parser.add_argument("--rounds", type=int, default=8, help="timed epochs per side (default 8)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per side (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or auto/cuda: the kind of device")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "numpyro_sharding.json")
    args = parser.parse_args()
    if "jax" not in sys.modules and args.device == "cpu":  # JAX reads it at import
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        ).strip()
    import jax

    from ppvae.spec.config import DataSpec
    from ppvae.data import load_dataset

    dataset = load_dataset(DataSpec(source="embedded"), "bernoulli", "unit_interval")
    n_train = dataset.train.shape[0]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {n: trainer(dataset, n, args.device, Path(tmp, str(n))) for n in (1, args.devices)}
        times = {n: [] for n in sides}
        losses = {n: [] for n in sides}
        loads = []
        for r in range(args.warmup + args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for n in order:
                rec = one_epoch(sides[n])
                if r >= args.warmup:
                    times[n].append(rec["seconds"])
                losses[n].append(rec["loss"])
            loads.append(round(os.getloadavg()[0], 2))
            print(
                f"round {r + 1}/{args.warmup + args.rounds}: "
                + ", ".join(f"{n} device(s) {times[n][-1] if times[n] else float('nan'):.3f} s" for n in sides)
                + f" (load {loads[-1]})",
                file=sys.stderr,
            )
        compile_seconds = {n: tr.compile_seconds for n, tr in sides.items()}
    stats = {
        n: {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "images_per_s": n_train / statistics.median(ts),
        }
        for n, ts in times.items()
    }
    per_round = [a / b for a, b in zip(times[args.devices], times[1])]
    results = {
        "protocol": PROTOCOL,
        "model": "mlp-400 (models/mlp-400.toml), Z = 20, Bernoulli, meanfield",
        "global_batch": 128,
        "train_images": n_train,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()[: args.devices]],
            "jax": jax.__version__,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        },
        "load_average": {"before": [round(x, 2) for x in load_before], "per_round": loads},
        "warmup_epochs": args.warmup,
        "epoch_seconds": {str(n): ts for n, ts in times.items()},
        "stats": {str(n): s for n, s in stats.items()},
        "ratio_n_over_1": {
            "of_medians": stats[args.devices]["median_s"] / stats[1]["median_s"],
            "per_round_median": statistics.median(per_round),
        },
        "epoch_loss": {str(n): ls for n, ls in losses.items()},
        "compile_seconds": compile_seconds,
    }
    lines = [
        f"# `python bench/numpyro_sharding.py {' '.join(sys.argv[1:])}`",
        "",
        f"Protocol {PROTOCOL}, mlp-400, global batch 128, {n_train} training images, {results['date']}; "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}; load average before {results['load_average']['before']}, "
        f"per round {min(loads)}-{max(loads)}. Raw: `{args.out.name}`.",
        "",
        "| devices | median s/epoch | min | max | images/s (median) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, s in stats.items():
        lines.append(f"| {n} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['max_s']:.3f} | {s['images_per_s']:,.0f} |")
    lines += [
        "",
        f"Epoch time, {args.devices} devices / 1 device: ratio of medians "
        f"{results['ratio_n_over_1']['of_medians']:.3f}, per-round median "
        f"{results['ratio_n_over_1']['per_round_median']:.3f}.",
        "",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
