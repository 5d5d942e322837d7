"""Where the Pyro backend's training step spends its time, against the hand-written PyTorch step.

Protocol MNIST-10k v1, mlp-400 (Z = 20), batch 128, CPU. Three measurements:

1. **Interleaved step timing** (no profiler): one optimizer step of each program in turn,
   repeated, medians of this thread's CPU time and of wall time in µs: the hand-written
   step (``bench/handwritten_torch.py``), ppvae's step through Pyro's trace + replay with
   validation on (the step before the direct sites), with the direct sites and validation on,
   and as ``Trainer.fit`` runs it after its first step (direct sites, validation off); then
   whole ``Trainer.fit`` epochs (the trainer's own bookkeeping included) against
   hand-written epochs.
2. **cProfile** of ppvae steps, cumulative time per part of the step (guide trace, model
   replay, distribution construction and argument validation, log-prob sums, KL dispatch,
   plate/scale messengers, Adam, backward), in µs per step. The profiler's own cost
   inflates Python-heavy parts; the shares, not the absolute µs, are the finding.
3. **torch.profiler**: the ATen operations one step executes (count and self CPU time),
   ppvae against hand-written: extra operations are the framework's.

Usage::

    python bench/pyro_profile.py [--estimator meanfield] [--reps 300] [--out bench/results/pyro_profile.json]

A measurement, not a test: the machine may be shared; the load average is recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ppvae.inference.estimators import estimator_names

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SPEC = HERE.parent / "models" / "mlp-400.toml"
TRACED = "ppvae trace + replay, validation on (before)"
DIRECT = "ppvae direct sites, validation off (Trainer.fit)"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def setup(estimator: str, num_particles: int = 1):
    """The dataset, ppvae's Trainer (mlp-400, CPU) and the hand-written side with the same weights."""
    import torch

    from handwritten_torch import HandTorch
    from ppvae.api import resolve_config, build_config
    from ppvae.backends.pyro.trainer import Trainer
    from ppvae.data import load_dataset

    cfg = resolve_config(
        build_config(SPEC, {"train.device": "cpu", "train.elbo": estimator, "train.num_particles": num_particles})
    )
    dataset = load_dataset(cfg.data, "bernoulli", "unit_interval")
    trainer = Trainer(cfg, dataset, Path(tempfile.mkdtemp()), progress=False)
    hand = HandTorch(dataset.train, analytic_kl=estimator != "trace")
    hand.model.copy_from(trainer.vae)
    hand.optimizer = torch.optim.Adam(hand.model.parameters(), lr=cfg.train.lr)
    return cfg, dataset, trainer, hand


def step_programs(cfg, trainer, hand):
    """name -> a function doing one optimizer step on a fresh binarized batch."""
    import pyro
    import torch

    from ppvae.backends.pyro import objectives
    from ppvae.backends.pyro.objectives import terms

    t = cfg.train
    rng = np.random.default_rng(0)
    n = trainer.x_train.shape[0]

    def batch_index():
        return torch.as_tensor(rng.integers(0, n, t.batch_size))

    def ppvae_step():
        xb = torch.bernoulli(trainer.x_train[batch_index()])
        tm = terms(trainer.vae.model, trainer.vae.guide, xb, beta=1.0, estimator=t.elbo, num_particles=t.num_particles)
        trainer.optimizer.zero_grad(set_to_none=True)
        tm.loss.backward()
        trainer.optimizer.step()

    def traced():  # the step before the direct sites: Pyro trace + replay, validation on
        saved = objectives.direct_traces
        objectives.direct_traces = lambda *args: None
        try:
            with pyro.validation_enabled(True):
                ppvae_step()
        finally:
            objectives.direct_traces = saved

    def direct_validated():
        with pyro.validation_enabled(True):
            ppvae_step()

    def direct_unvalidated():  # what Trainer.fit runs after its first step
        with pyro.validation_enabled(False):
            ppvae_step()

    def hand_step():
        xb = torch.bernoulli(hand.x_train[batch_index()])
        eps = torch.randn(xb.shape[0], hand.model.z_dim)
        loss, _, _ = hand.model(xb, eps)
        hand.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        hand.optimizer.step()

    return {
        "hand-written": hand_step,
        TRACED: traced,
        "ppvae direct sites, validation on": direct_validated,
        DIRECT: direct_unvalidated,
    }


def interleaved(programs: dict, reps: int, warmup: int = 20) -> dict:
    """Median µs per step of each program, timed in turn (A B C A B C ...).

    Both wall time and this thread's CPU time: with one torch thread every operation runs
    in the calling thread, so its CPU time does not count the time other processes take
    the core away (the machine may be shared); wall time does.
    """
    wall = {name: [] for name in programs}
    cpu = {name: [] for name in programs}
    for i in range(warmup + reps):
        for name, fn in programs.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            if i >= warmup:
                cpu[name].append((time.thread_time() - c0) * 1e6)
                wall[name].append((time.perf_counter() - w0) * 1e6)
    return {
        name: {
            "cpu_median_us": statistics.median(cpu[name]),
            "wall_median_us": statistics.median(wall[name]),
            "cpu_q25_us": float(np.percentile(cpu[name], 25)),
            "cpu_q75_us": float(np.percentile(cpu[name], 75)),
            "n": reps,
        }
        for name in programs
    }


def trainer_epochs(cfg, trainer, hand, epochs: int) -> dict:
    """Whole epochs, interleaved: ``Trainer.fit`` (its recorded seconds) against the hand-written epoch."""
    out = {"ppvae Trainer.fit": [], "hand-written": []}
    for _ in range(epochs + 1):
        train = dataclasses.replace(trainer.cfg.train, epochs=trainer.state.epoch + 1)
        trainer.cfg = dataclasses.replace(trainer.cfg, train=train)
        trainer.fit()
        out["ppvae Trainer.fit"].append(trainer.state.records[-1]["seconds"])
        out["hand-written"].append(hand.run_epoch())
    out = {k: v[1:] for k, v in out.items()}  # the first is warm-up
    steps = trainer.state.records[-1]["step"] // trainer.state.epoch
    return {
        "epoch_seconds": out,
        "steps_per_epoch": steps,
        "median_us_per_step": {k: statistics.median(v) / steps * 1e6 for k, v in out.items()},
        "ratio_of_medians": statistics.median(out["ppvae Trainer.fit"]) / statistics.median(out["hand-written"]),
    }


#: (label, test on the pstats key (file, line, function)); cumulative time of the matching
#: functions. Entries are chosen so that they do not contain one another (except where said).
PARTS = [
    (
        "direct sites (encoder + decoder forward included)",
        lambda f, n: f.endswith("backends/pyro/direct.py") and n == "direct_traces",
    ),
    ("guide trace (encoder forward included)", lambda f, n: f.endswith("backends/pyro/model.py") and n == "guide"),
    ("model replay (decoder forward included)", lambda f, n: f.endswith("backends/pyro/model.py") and n == "model"),
    (
        "  of which network forward (encoder + decoder)",
        lambda f, n: f.endswith("backends/pyro/nets.py") and n == "forward",
    ),
    (
        "  of which distribution construction + argument validation",
        lambda f, n: f.endswith("torch/distributions/distribution.py") and n == "__init__",
    ),
    (
        "  of which pyro.sample through the messenger stack (trace, replay, plate, scale)",
        lambda f, n: f.endswith("pyro/poutine/runtime.py") and n == "apply_stack",
    ),
    (
        "  of which plate/scale enter and exit",
        lambda f, n: f.endswith("pyro/poutine/messenger.py") and n in ("__enter__", "__exit__"),
    ),
    (
        "log-prob sums (x, z under p and q)",
        lambda f, n: f.endswith("backends/pyro/objectives.py") and n == "_site_log_prob",
    ),
    ("KL dispatch + analytic KL", lambda f, n: f.endswith("torch/distributions/kl.py") and n == "kl_divergence"),
    (
        "  of which support/argument checks in log_prob (validate_sample)",
        lambda f, n: f.endswith("torch/distributions/distribution.py") and n == "_validate_sample",
    ),
    ("backward", lambda f, n: f.endswith("torch/_tensor.py") and n == "backward"),
    ("Adam step", lambda f, n: f.endswith("torch/optim/optimizer.py") and n == "wrapper"),
    ("zero_grad", lambda f, n: f.endswith("torch/optim/optimizer.py") and n == "zero_grad"),
    ("binarization", lambda f, n: n == "<built-in method torch.bernoulli>"),
]


def profile_steps(fn, steps: int) -> dict:
    """cProfile ``steps`` calls of ``fn``; µs per step for each of :data:`PARTS` and in total."""
    prof = cProfile.Profile()
    prof.enable()
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    total = time.perf_counter() - started
    prof.disable()
    stats = pstats.Stats(prof).stats
    parts = {}
    for label, test in PARTS:
        ct = sum(v[3] for (f, _, n), v in stats.items() if test(f, n))
        parts[label] = ct / steps * 1e6
    return {"total_us_per_step_profiled": total / steps * 1e6, "parts_us_per_step": parts}


def torch_ops(fn, steps: int) -> dict:
    """ATen operations per step (count, self CPU µs), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    rows = []
    for e in prof.key_averages():
        if e.key.startswith("aten::") or e.key.startswith("autograd::"):
            rows.append(
                {"op": e.key, "calls_per_step": e.count / steps, "self_cpu_us_per_step": e.self_cpu_time_total / steps}
            )
    rows.sort(key=lambda r: -r["self_cpu_us_per_step"])
    aten = [r for r in rows if r["op"].startswith("aten::")]
    return {
        "aten_calls_per_step": sum(r["calls_per_step"] for r in aten),
        "aten_self_cpu_us_per_step": sum(r["self_cpu_us_per_step"] for r in aten),
        "top": rows[:15],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", default="meanfield", choices=list(estimator_names()))
    parser.add_argument("--num-particles", type=int, default=1)
    parser.add_argument("--reps", type=int, default=300, help="interleaved steps per program")
    parser.add_argument("--epochs", type=int, default=5, help="interleaved epochs, Trainer.fit vs hand-written")
    parser.add_argument("--profile-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pyro_profile.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    cfg, dataset, trainer, hand = setup(args.estimator, args.num_particles)
    programs = step_programs(cfg, trainer, hand)
    result = {
        "protocol": "MNIST-10k v1",
        "model": "mlp-400, Z = 20, batch 128",
        "estimator": args.estimator,
        "num_particles": args.num_particles,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_average(),
    }
    result["steps"] = interleaved(programs, args.reps)
    result["epochs"] = trainer_epochs(cfg, trainer, hand, args.epochs)
    result["cprofile"] = {
        name: profile_steps(programs[name], args.profile_steps) for name in (TRACED, DIRECT, "hand-written")
    }
    result["torch_ops"] = {name: torch_ops(programs[name], 20) for name in (TRACED, DIRECT, "hand-written")}
    result["load_average_end"] = load_average()

    hand = result["steps"]["hand-written"]
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")
    print("| program | thread CPU µs/step (median) | q25 | q75 | / hand-written | wall µs/step | / hand-written |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, st in result["steps"].items():
        print(
            f"| {name} | {st['cpu_median_us']:.0f} | {st['cpu_q25_us']:.0f} | {st['cpu_q75_us']:.0f} | "
            f"{st['cpu_median_us'] / hand['cpu_median_us']:.3f} | {st['wall_median_us']:.0f} | "
            f"{st['wall_median_us'] / hand['wall_median_us']:.3f} |"
        )
    e = result["epochs"]
    print(
        f"| whole epochs ({e['steps_per_epoch']} steps), Trainer.fit | | | | | "
        f"{e['median_us_per_step']['ppvae Trainer.fit']:.0f} | {e['ratio_of_medians']:.3f} |"
    )
    print()
    names = list(result["cprofile"])
    print("| part of the step (cProfile, µs/step) | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for label, _ in PARTS:
        print(
            f"| {label} | "
            + " | ".join(f"{result['cprofile'][n]['parts_us_per_step'][label]:.0f}" for n in names)
            + " |"
        )
    print(
        "| whole step under cProfile | "
        + " | ".join(f"{result['cprofile'][n]['total_us_per_step_profiled']:.0f}" for n in names)
        + " |"
    )
    print()
    for name, ops in result["torch_ops"].items():
        print(
            f"{name}: {ops['aten_calls_per_step']:.0f} ATen calls/step, "
            f"{ops['aten_self_cpu_us_per_step']:.0f} µs self CPU/step"
        )
        for r in ops["top"][:10]:
            print(f"    {r['op']}: {r['calls_per_step']:.1f} calls, {r['self_cpu_us_per_step']:.0f} µs")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
