"""Quality against hand-written twins at equal epochs (issue 14): held-out log p(x), seeds, verdict.

Protocol MNIST-10k v1 (``../shared/benchmarks/PROTOCOL.md``): the 10,000 MNIST test images,
``default_rng(0)`` permutation, 8,000 train / 2,000 held out, dynamic binarization in
training, the held-out images binarized once with ``default_rng(1)``. Two twins, each trained
from scratch for every seed on both sides, in this one process:

* ``mlp-400`` -- ppvae with ``models/mlp-400.toml`` (784-400-20, ReLU, meanfield ELBO with the
  analytic KL) against the hand-written PyTorch loop of the same network and loss; 50 epochs.
* ``iwae-paper`` -- ppvae with ``models/iwae.toml`` set to the IWAE paper's networks (encoder
  784-200-200-50 and decoder 50-200-200-784, tanh, Z = 50) and the IWAE bound with K = 10,
  against the hand-written IWAE loop of the same; 100 epochs.

The ppvae side is the public API (``ppvae.fit`` on the Pyro backend, then
``Run.evaluate(num_samples=K)``); the hand side is ``bench/handwritten_torch.py``
(``HandTorch``, its ``heldout_log_px``). Both use the same seeds, batch size and learning
rate (read from ppvae's resolved config) and the same split: the protocol's arrays are built
here from the MNIST file and checked equal to ppvae's prepared data before anything trains.
Held-out log p(x) is the IWAE bound with K = ``--eval-samples`` (1000: the protocol's
quick figure), per image, averaged over the 2,000 held-out images.

Verdict per twin: ``ppvae mean >= hand mean - hand sd`` (sample sd over the seeds), i.e.
ppvae is within the hand-written seed spread or better.

Usage::

    python bench/quality.py                                  # full: 3 seeds, K = 1000 -> bench/results/quality.json
    python bench/quality.py --quick --out /tmp/quality.json  # smoke: 1 epoch, seed 0, K = 10

Measurements, not tests: the load average at the start and the end is recorded, and the
JSON is rewritten (atomically, ``"complete": false``) after every seed, so a long run can be
inspected while it goes on.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTOCOL = "MNIST-10k v1"
MNIST_FILE = ROOT.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
DEFAULT_OUT = HERE / "results" / "quality.json"

# The IWAE paper's one-stochastic-layer networks (Burda et al. 2016): 784-200-200-50, tanh.
_PAPER_NET = {
    "model.latent_dim": 50,
    "model.encoder_options.hidden": [200, 200],
    "model.encoder_options.activation": "tanh",
    "model.decoder_options.hidden": [200, 200],
    "model.decoder_options.activation": "tanh",
}

TWINS = {
    "mlp-400": {
        "spec": ROOT / "models" / "mlp-400.toml",
        "epochs": 50,
        "overrides": {"train.elbo": "meanfield", "train.num_particles": 1},
        "network": "784-400-20, ReLU",
        "objective": "ELBO, analytic KL",
    },
    "iwae-paper": {
        "spec": ROOT / "models" / "iwae.toml",
        "epochs": 100,
        "overrides": {**_PAPER_NET, "train.elbo": "iwae", "train.num_particles": 10},
        "network": "784-200-200-50, tanh",
        "objective": "IWAE, K = 10",
    },
}


# -- the protocol's data, built independently of ppvae ---------------------------------------
def protocol_data(path: Path = MNIST_FILE) -> dict:
    """The MNIST-10k v1 split, from the idx file, exactly as the protocol states it.

    Parameters
    ----------
    path : Path
        ``t10k-images-idx3-ubyte.gz``.

    Returns
    -------
    dict
        ``train`` (8000, 28, 28) float32 grey levels in [0, 1] and ``heldout`` (2000, 28, 28)
        float32 in {0, 1}, the fixed binarization of the held-out images.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051 or (n, rows, cols) != (10000, 28, 28):
        raise SystemExit(f"{path}: not the 10,000 MNIST test images (magic {magic}, shape {(n, rows, cols)})")
    # float64 for the comparison with the uniforms: the protocol's binarization draws exactly.
    x = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols).astype(np.float64) / 255.0
    perm = np.random.default_rng(0).permutation(n)
    train, heldout = x[perm[:8000]], x[perm[8000:]]
    fixed = np.random.default_rng(1).random((2000, rows * cols)) < heldout.reshape(2000, -1)
    return {
        "train": train.astype(np.float32),
        "heldout": fixed.reshape(2000, rows, cols).astype(np.float32),
    }


def ppvae_config(twin: dict, seed: int, epochs: int, eval_samples: int):
    """The resolved ppvae Config a twin's fit trains, and the overrides that make it."""
    from ppvae.api import build_config, resolve_config

    overrides = {
        **twin["overrides"],
        "train.backend": "pyro",  # the hand-written twin is PyTorch: the Pyro backend's yardstick
        "train.device": "cpu",
        "train.seed": seed,
        "train.epochs": epochs,
        # fit's own end-of-run evaluation is skipped in effect (K = 1); the timed one is below.
        "train.eval_num_samples": 1,
    }
    return resolve_config(build_config(twin["spec"], overrides)), overrides


def check_split(cfg, data: dict) -> None:
    """Fail unless ppvae's prepared train/held-out arrays are the protocol's.

    Raises
    ------
    SystemExit
        When a shape or a value differs: the two sides would not be twins.
    """
    from ppvae.data import load_dataset
    from ppvae.spec import registry

    ds = load_dataset(
        cfg.data, cfg.model.likelihood, registry.likelihood_support(cfg.model.likelihood, cfg.train.backend)
    )
    if ds.binarize != "dynamic" or ds.validation is not None:
        raise SystemExit(f"ppvae's data is binarized {ds.binarize!r} with a validation split: not the protocol")
    for name in ("train", "heldout"):
        mine, theirs = data[name], np.asarray(getattr(ds, name))
        if mine.shape != theirs.shape:
            raise SystemExit(f"{name}: ppvae has shape {theirs.shape}, the protocol {mine.shape}")
        # Grey levels may round differently in float32 (x/255 in another order); binarized
        # held-out pixels must agree exactly.
        tol = 0.0 if name == "heldout" else 1e-6
        worst = float(np.abs(mine - theirs).max())
        if worst > tol:
            raise SystemExit(f"{name}: ppvae's prepared data differs from the protocol's by up to {worst}")


# -- one seed of one twin, both sides ---------------------------------------------------------
def run_ppvae(twin: dict, seed: int, epochs: int, eval_samples: int, folder: Path, data: dict | None = None) -> dict:
    """Fit and evaluate ppvae's side; returns its figures (JSON-ready).

    Given ``data`` (the protocol's arrays), also scores ppvae's trained weights with the
    hand-written evaluator (``evaluator_check``): the two estimates of the same model must
    agree within Monte Carlo noise, else the sides' figures are not comparable.
    """
    import ppvae

    _, overrides = ppvae_config(twin, seed, epochs, eval_samples)
    started = time.perf_counter()
    run = ppvae.fit(twin["spec"], out=folder, overrides=overrides, pictures=False, progress=False, force=True)
    fit_wall = time.perf_counter() - started
    t0 = time.perf_counter()
    # The held-out split passed explicitly (it is the run's own, checked equal to the
    # protocol's): Run.evaluate then skips the linear probe on the labels, which costs tens
    # of seconds and has nothing to do with log p(x).
    ev = run.evaluate(run.heldout(), num_samples=eval_samples)
    eval_seconds = time.perf_counter() - t0
    check = None
    if data is not None:
        from handwritten_torch import HandTorch, hand_like

        m = run.config.model
        scorer = HandTorch(
            data["heldout"][:1],
            latent_dim=m.latent_dim,
            hidden=tuple(m.encoder_options["hidden"]),
            activation=m.encoder_options["activation"],
        )
        scorer.model = hand_like(run.trained.vae)
        hand_value = scorer.heldout_log_px(data["heldout"], num_samples=eval_samples)
        check = {
            "ppvae_evaluator": float(ev["heldout_log_px"]),
            "hand_evaluator_on_ppvae_weights": hand_value,
            "difference": hand_value - float(ev["heldout_log_px"]),
        }
    return {
        "evaluator_check": check,
        "heldout_log_px": float(ev["heldout_log_px"]),
        "heldout_log_px_stderr": ev.get("heldout_log_px_stderr"),
        "heldout_elbo": float(ev["heldout_elbo"]),
        "kl": float(ev["kl"]) if "kl" in ev else None,
        "active_units": None if ev.get("active_units") is None else int(ev["active_units"]),
        "epochs": run.summary["epochs"],
        "train_seconds": float(run.summary["train_seconds"]),
        "fit_wall_seconds": fit_wall,  # training, per-epoch monitoring, checkpoints, fit's own K = 1 evaluation
        "eval_seconds": eval_seconds,
        "final_train_loss": run.summary["final_epoch"]["loss"],
        "warnings": run.summary.get("warnings", []),
    }


def run_hand(cfg, data: dict, seed: int, epochs: int, eval_samples: int) -> dict:
    """Train and evaluate the hand-written PyTorch twin of ``cfg``; returns its figures."""
    from handwritten_torch import HandTorch

    m, t = cfg.model, cfg.train
    enc, dec = m.encoder_options, m.decoder_options
    if list(dec["hidden"]) != list(enc["hidden"])[::-1] or dec["activation"] != enc["activation"]:
        raise SystemExit("the hand-written twin has a mirrored decoder with the encoder's activation")
    started = time.perf_counter()
    hand = HandTorch(
        data["train"],
        seed=seed,
        batch_size=t.batch_size,
        analytic_kl=t.elbo == "meanfield",
        lr=t.lr,
        latent_dim=m.latent_dim,
        hidden=tuple(enc["hidden"]),
        num_particles=t.num_particles,
        activation=enc["activation"],
    )
    train_seconds = sum(hand.run_epoch() for _ in range(epochs))
    t0 = time.perf_counter()
    log_px = hand.heldout_log_px(data["heldout"], num_samples=eval_samples)
    eval_seconds = time.perf_counter() - t0
    return {
        "heldout_log_px": log_px,
        "heldout_elbo": hand.heldout_elbo(data["heldout"]),
        "epochs": hand.epoch,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - started,
        "final_train_loss": hand.last_loss,
        "name": hand.name,
    }


def _stats(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,  # sample sd (n - 1)
        "values": values,
    }


def summarize(entry: dict) -> None:
    """Add per-side statistics, the paired differences and the verdict to a twin's entry."""
    seeds = entry["seeds_done"]
    for side in ("ppvae", "hand"):
        rows = [entry["runs"][str(s)][side] for s in seeds]
        entry[side] = {
            "heldout_log_px": _stats([r["heldout_log_px"] for r in rows]),
            "heldout_elbo": _stats([r["heldout_elbo"] for r in rows]),
            "train_seconds": _stats([r["train_seconds"] for r in rows]),
            "eval_seconds": _stats([r["eval_seconds"] for r in rows]),
        }
    p, h = entry["ppvae"]["heldout_log_px"], entry["hand"]["heldout_log_px"]
    # Same seed on both sides: the paired difference says more than the two means apart.
    entry["paired_difference"] = _stats(
        [
            entry["runs"][str(s)]["ppvae"]["heldout_log_px"] - entry["runs"][str(s)]["hand"]["heldout_log_px"]
            for s in seeds
        ]
    )
    if h["sd"] is None:
        entry["verdict"] = None
        entry["verdict_text"] = "no spread with one seed"
    else:
        entry["verdict"] = p["mean"] >= h["mean"] - h["sd"]
        entry["verdict_text"] = (
            ("better" if p["mean"] >= h["mean"] else "within the seed spread")
            if entry["verdict"]
            else "worse than the seed spread"
        )


# -- the report -------------------------------------------------------------------------------
def _pm(s: dict, sign: str = "") -> str:
    return f"{s['mean']:{sign}.2f}" + ("" if s["sd"] is None else f" ± {s['sd']:.2f}")


def markdown(result: dict) -> str:
    """The results as a Markdown section for ``bench/RESULTS.md``."""
    m = result["machine"]
    k = result["eval_samples"]
    lines = [
        f"Command: `{result['command']}`; protocol {result['protocol']} (8,000 train / 2,000 held out, held-out "
        f"log p(x) by the IWAE bound with K = {k} per image); Pyro backend against hand-written PyTorch, both "
        f"trained from scratch for each seed ({', '.join(map(str, result['seeds']))}) in the same process, "
        f"same split, batch 128, Adam 1e-3. Machine: {m['cpu_model']}, {m['cpu_count']} cores, "
        f"{m.get('memory_gib', '?')} GiB, CPU, {result['torch_threads']} torch thread(s). Versions: "
        + ", ".join(f"{a} {b}" for a, b in result["versions"].items())
        + ". "
        f"Date {result['date']}; load average {result['load_average_start']} at the start, "
        f"{result.get('load_average_end')} at the end. Raw: `bench/results/quality.json`.",
        "",
        "Held-out figures in nats per image, mean ± sample sd over the seeds; Δ = ppvae − hand-written "
        "log p(x), paired by seed; seconds are training (sum of epochs) + evaluation, mean per seed. "
        "Verdict: ppvae mean ≥ hand-written mean − hand-written sd.",
        "",
        f"| twin | network | objective | epochs | ppvae log p(x) K={k} | hand-written log p(x) K={k} | Δ (paired) "
        "| ppvae ELBO | hand-written ELBO | ppvae s (train + eval) | hand-written s (train + eval) | verdict |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, e in result["twins"].items():
        if "ppvae" not in e:
            continue
        p, h = e["ppvae"], e["hand"]
        lines.append(
            f"| {name} | {e['network']} | {e['objective']} | {e['epochs']} | {_pm(p['heldout_log_px'])} | "
            f"{_pm(h['heldout_log_px'])} | {_pm(e['paired_difference'], '+')} | {_pm(p['heldout_elbo'])} | "
            f"{_pm(h['heldout_elbo'])} | {p['train_seconds']['mean']:.0f} + {p['eval_seconds']['mean']:.0f} | "
            f"{h['train_seconds']['mean']:.0f} + {h['eval_seconds']['mean']:.0f} | "
            f"{'✓ ' if e['verdict'] else '✗ ' if e['verdict'] is False else ''}{e['verdict_text']} |"
        )
    checks = [
        f"{name} {e['evaluator_check']['difference']:+.3f} nats ({e['evaluator_check']['ppvae_evaluator']:.2f} "
        f"by ppvae's)"
        for name, e in result["twins"].items()
        if e.get("evaluator_check")
    ]
    if checks:
        lines += [
            "",
            f"Evaluator check (the first seed's trained ppvae weights, scored at K = {k} by the hand-written "
            "evaluator minus ppvae's own; different importance samples, so Monte Carlo noise only): "
            + "; ".join(checks)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _write(path: Path, result: dict) -> None:
    from ppvae.runs.atomic import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise SystemExit(f"--{what} {text!r}: give non-negative integers separated by commas, e.g. 0,1,2")
    return values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", default=",".join(TWINS), help=f"which twins (default {','.join(TWINS)})")
    parser.add_argument("--seeds", default=None, help="seeds, the same on both sides (default 0,1,2; quick: 0)")
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="K of held-out log p(x) (default 1000; quick: 10)"
    )
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=None,
        help="multiply every twin's epochs (50 and 100) by this, at least 1 epoch (quick: 1 epoch each)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads, both sides (default 1: steady on a shared machine)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, seed 0, K = 10")
    parser.add_argument("--out", type=Path, default=None, help=f"the JSON (default {DEFAULT_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        raise SystemExit("--quick writes only where --out says (a scratch file), never bench/results/quality.json")
    names = [t for t in args.twins.split(",") if t]
    unknown = [t for t in names if t not in TWINS]
    if unknown or not names:
        raise SystemExit(f"unknown twin(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(TWINS)}")
    seeds = _ints(args.seeds or ("0" if args.quick else "0,1,2"), "seeds")
    eval_samples = args.eval_samples or (10 if args.quick else 1000)
    if eval_samples < 1:
        raise SystemExit(f"--eval-samples {eval_samples}: give a positive number of importance samples")
    if args.epochs_scale is not None and not (args.epochs_scale > 0 and math.isfinite(args.epochs_scale)):
        raise SystemExit(f"--epochs-scale {args.epochs_scale}: give a positive number")

    def epochs_of(twin: dict) -> int:
        if args.epochs_scale is not None:
            return max(1, round(twin["epochs"] * args.epochs_scale))
        return 1 if args.quick else twin["epochs"]

    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: give a positive number")
    import torch
    from threadpoolctl import threadpool_limits

    # One thread by default: on a 2-core machine that something else also uses, two torch
    # threads oversubscribe the cores and an epoch's time swings wildly (measured on the
    # IWAE-paper network: 1.5 s per epoch steady on one thread, 3 to 32 s on two). The same
    # holds for numpy's BLAS, which fit's linear probe (scikit-learn) uses: 46 s on two
    # oversubscribed threads.
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    sys.path.insert(0, str(HERE))
    from suite import machine, versions  # the benchmark suite's description of the machine

    out = args.out or DEFAULT_OUT
    say = lambda msg: print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    command = "python bench/quality.py" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    result = {
        "protocol": PROTOCOL,
        "command": command,
        "complete": False,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "versions": versions(),
        "seeds": seeds,
        "eval_samples": eval_samples,
        "torch_threads": args.threads,
        "estimator": f"held-out log p(x): IWAE bound, K = {eval_samples} per image, mean over the held-out images",
        "load_average_start": _load_average(),
        "twins": {},
    }
    data = protocol_data()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppvae-quality-") as tmp:
        for name in names:
            twin = TWINS[name]
            epochs = epochs_of(twin)
            cfg, overrides = ppvae_config(twin, seeds[0], epochs, eval_samples)
            check_split(cfg, data)
            entry = result["twins"][name] = {
                "spec": str(twin["spec"].relative_to(ROOT)),
                "overrides": {k: v for k, v in overrides.items() if k != "train.seed"},
                "network": twin["network"],
                "objective": twin["objective"],
                "epochs": epochs,
                "runs": {},
                "seeds_done": [],
            }
            for i, seed in enumerate(seeds):
                cfg = ppvae_config(twin, seed, epochs, eval_samples)[0]
                row = {}
                # Alternate which side goes first, so a drift of the machine's load over the
                # run does not always land on the same side's seconds.
                order = ("ppvae", "hand") if i % 2 == 0 else ("hand", "ppvae")
                for side in order:
                    say(f"{name} seed {seed}: {side}, {epochs} epochs, K = {eval_samples}, load {_load_average()}")
                    if side == "ppvae":
                        # The evaluator check once per twin (it costs one more evaluation).
                        row[side] = run_ppvae(
                            twin, seed, epochs, eval_samples, Path(tmp) / f"{name}-{seed}", data if i == 0 else None
                        )
                        if row[side]["evaluator_check"] is not None:
                            entry["evaluator_check"] = row[side]["evaluator_check"]
                            say(f"{name} seed {seed}: evaluator check {entry['evaluator_check']}")
                    else:
                        row[side] = run_hand(cfg, data, seed, epochs, eval_samples)
                    r = row[side]
                    say(
                        f"{name} seed {seed}: {side} log p(x) {r['heldout_log_px']:.2f}, ELBO {r['heldout_elbo']:.2f}, "
                        f"train {r['train_seconds']:.0f} s, eval {r['eval_seconds']:.0f} s"
                    )
                entry["runs"][str(seed)] = row
                entry["seeds_done"].append(seed)
                summarize(entry)
                result["wall_seconds"] = time.perf_counter() - started
                _write(out, result)
    result["load_average_end"] = _load_average()
    result["wall_seconds"] = time.perf_counter() - started
    result["complete"] = True
    _write(out, result)
    print(markdown(result))


if __name__ == "__main__":
    main()
