"""The ppvae benchmark suite: both backends x every estimator, beside hand-written loops.

Protocol MNIST-10k v1 (``../shared/benchmarks/PROTOCOL.md``): the 10,000 embedded MNIST
test images, 8,000 train / 2,000 held out, dynamic binarization in training; the reference
network mlp-400 (``models/mlp-400.toml``: Z = 20, Bernoulli, Adam 1e-3, batch 128).

For every configuration (backend x estimator: meanfield, trace, iwae K = 5, dreg K = 5),
in a fresh subprocess (so that peak memory is that configuration's own):

* **speed** -- ppvae's trainer (``Trainer.fit``, one epoch at a time, its own clock; the
  CPU time of its end-of-epoch held-out ELBO and checkpoint is left out, as its clock does) and
  the hand-written loop of the same network in the same framework train side by side,
  one epoch each in turn, the order alternating; the first epoch of each is warm-up
  (NumPyro: compilation). Seconds per epoch are the median of the timed epochs, with the
  process CPU time per epoch beside (on a shared machine it is the steadier figure).
  Hand-written loops: PyTorch (``bench/handwritten_torch.py``) for the Pyro backend, a
  jit-compiled JAX epoch (``bench/numpyro_overhead.py``) for the NumPyro backend, with the
  analytic KL for ``meanfield``, the sampled KL for ``trace``, and for the IWAE rows the
  PyTorch IWAE bound with the same K (there is no hand-written JAX IWAE: no ratio).
* **quality** -- held-out ELBO after training (ppvae and hand-written), held-out log p(x)
  by the IWAE bound with K = 1000 for every row and K = 5000 for the default estimator of
  each backend (``--k5000-all``: every row), each with its evaluation time and the peak
  resident memory the evaluation added (sampled every 5 ms).

Usage::

    python bench/suite.py                 # full: 10 epochs; bench/results/suite.json + RESULTS.md section
    python bench/suite.py --quick --out /tmp/suite   # smoke test (tiny network, subsets), never RESULTS.md

The full mode rewrites the part of ``bench/RESULTS.md`` between ``<!-- suite:begin -->``
and ``<!-- suite:end -->``. Measurements, not tests: the load average at the start and the
end of the run and of every configuration is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = ROOT / "models" / "mlp-400.toml"
PROTOCOL = "MNIST-10k v1"
ESTIMATORS = {"meanfield": 1, "trace": 1, "iwae": 5, "dreg": 5}
BACKENDS = ("pyro", "numpyro")
DEFAULT_ESTIMATOR = "meanfield"
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"

FULL = {"epochs": 10, "eval_k": [1000, 5000], "train_images": None, "heldout_images": None, "hidden": 400}
QUICK = {"epochs": 2, "eval_k": [20, 50], "train_images": 256, "heldout_images": 64, "hidden": 32}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; the peak so far elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The largest resident memory of this process so far."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


class PeakRSS:
    """Peak resident memory while the block runs, sampled every 5 ms by a thread."""

    def __enter__(self):
        self.before = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.before) / 2**20


# -- one configuration (the worker, in its own process) ------------------------------------
def _dataset(settings: dict):
    from ppvae.api import resolve_config, build_config
    from ppvae.data import load_dataset

    cfg = resolve_config(build_config(SPEC))
    ds = load_dataset(cfg.data, cfg.model.likelihood, "unit_interval")
    assert ds.binarize == "dynamic"
    if settings["train_images"] is None:
        assert ds.train.shape[0] == 8000 and ds.heldout.shape[0] == 2000, "the protocol's split"
    else:
        ds = dataclasses.replace(
            ds, train=ds.train[: settings["train_images"]], heldout=ds.heldout[: settings["heldout_images"]]
        )
    return ds


def _config(backend: str, estimator: str, settings: dict, device: str):
    from ppvae.spec import registry
    from ppvae.api import resolve_config, build_config

    registry.load_backend(backend)
    h = settings["hidden"]
    return resolve_config(
        build_config(
            SPEC,
            {
                "train.backend": backend,
                "train.elbo": estimator,
                "train.num_particles": ESTIMATORS[estimator],
                "train.device": device,
                "model.encoder_options.hidden": [h],
                "model.decoder_options.hidden": [h],
            },
        )
    )


class _PPVAE:
    """ppvae's trainer, one ``Trainer.fit`` epoch per call, timed by the trainer's own clock.

    After its clock stops, ``fit`` computes the held-out ELBO and writes a checkpoint; their
    CPU time is measured apart (``after_cpu``), so the CPU time of the epoch excludes them as
    the trainer's wall clock does.
    """

    def __init__(self, cfg, dataset, run_dir: Path):
        if cfg.train.backend == "pyro":
            from ppvae.backends.pyro import trainer as module

            self.trainer = module.Trainer(cfg, dataset, run_dir, progress=False)
            module.monitor_elbo = self._cpu_timed(module.monitor_elbo)
        else:
            from ppvae.backends.numpyro.trainer import Trainer

            self.trainer = Trainer(cfg, dataset, run_dir, progress=False)
            self.trainer._monitor_elbo = self._cpu_timed(self.trainer._monitor_elbo)
        self.trainer.save = self._cpu_timed(self.trainer.save)
        self.after_cpu = 0.0

    def _cpu_timed(self, fn):
        def timed(*args, **kwargs):
            c0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.after_cpu += time.process_time() - c0

        return timed

    def run_epoch(self) -> float:
        tr = self.trainer
        tr.cfg = dataclasses.replace(tr.cfg, train=dataclasses.replace(tr.cfg.train, epochs=tr.state.epoch + 1))
        tr.fit()
        return tr.state.records[-1]["seconds"]

    def trained(self):
        tr = self.trainer
        if tr.cfg.train.backend == "pyro":
            from ppvae.backends.pyro.trained import TrainedVAE

            return TrainedVAE(tr.vae, tr.device)
        from ppvae.backends.numpyro.trained import TrainedVAE

        return TrainedVAE(tr.vae, tr.params, tr.device)


def _hand(cfg, dataset, device: str):
    """The hand-written counterpart of a configuration, or ``None`` where there is none."""
    t = cfg.train
    hidden = cfg.model.encoder_options["hidden"][0]
    if t.backend == "pyro":
        from handwritten_torch import HandTorch

        return HandTorch(
            dataset.train,
            seed=t.seed,
            batch_size=t.batch_size,
            analytic_kl=t.elbo == "meanfield",
            lr=t.lr,
            device=device,
            latent_dim=cfg.model.latent_dim,
            hidden=hidden,
            num_particles=t.num_particles,
        )
    if t.elbo not in ("meanfield", "trace") or hidden != 400:
        return None  # the hand-written JAX loop is the mlp-400 ELBO only
    from numpyro_overhead import Hand

    return Hand(dataset.train, t.seed, t.batch_size, t.elbo == "meanfield", t.lr)


def _hand_heldout_elbo(hand, dataset) -> float | None:
    if hasattr(hand, "heldout_elbo"):
        return hand.heldout_elbo(dataset.heldout)
    try:  # the JAX side: the analytic-KL ELBO with one draw, as its loss computes it
        import jax
        import jax.numpy as jnp

        from numpyro_overhead import hand_loss

        x = jnp.asarray(dataset.heldout.reshape(len(dataset.heldout), -1))
        eps = jax.random.normal(jax.random.PRNGKey(1), (x.shape[0], hand.params["loc"]["b"].shape[0]))
        return -float(hand_loss(hand.params, eps, x, True)[0])
    except Exception:  # noqa: BLE001 - an optional column
        return None


def run_config(backend: str, estimator: str, settings: dict, device: str, eval_k: list[int]) -> dict:
    """Train and evaluate one configuration; returns its record (JSON-ready)."""
    started, load_start = time.perf_counter(), load_average()
    if backend == "numpyro":
        import jax

        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")
    else:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    dataset = _dataset(settings)
    cfg = _config(backend, estimator, settings, device)
    n_train = dataset.train.shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        rss0 = rss_bytes()
        ppvae_side = _PPVAE(cfg, dataset, Path(tmp))
        hand = _hand(cfg, dataset, device)
        sides = [("ppvae", ppvae_side)] + ([("hand", hand)] if hand is not None else [])
        wall = {name: [] for name, _ in sides}
        cpu = {name: [] for name, _ in sides}
        for epoch in range(settings["epochs"]):
            order = sides if epoch % 2 == 0 else sides[::-1]  # alternate who goes first
            for name, side in order:
                c0, after0 = time.process_time(), getattr(side, "after_cpu", 0.0)
                seconds = side.run_epoch()
                if epoch > 0:  # the first epoch is warm-up (and compilation)
                    wall[name].append(seconds)
                    cpu[name].append(time.process_time() - c0 - (getattr(side, "after_cpu", 0.0) - after0))
        train_peak = peak_rss_bytes()  # training is the first large phase: the peak so far is its peak
        record = ppvae_side.trainer.state.records[-1]
        trained = ppvae_side.trained()
        evaluation = {}
        for k in eval_k:
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                ev = trained.evaluate(dataset.heldout, num_samples=k, is_image=True)
                seconds = time.perf_counter() - t0
            evaluation[str(k)] = {
                "log_px": ev["heldout_log_px"],
                "log_px_se": ev.get("heldout_log_px_stderr"),
                "seconds": seconds,
                "peak_rss_added_mib": mem.added_mib,
                "heldout_points": int(dataset.heldout.shape[0]),
            }
        hand_elbo = None if hand is None else _hand_heldout_elbo(hand, dataset)
    speed = {}
    for name, _ in sides:
        med = statistics.median(wall[name])
        speed[name] = {
            "seconds_per_epoch": med,
            "epoch_seconds": wall[name],
            "cpu_seconds_per_epoch": statistics.median(cpu[name]),
            "images_per_s": n_train / med,
        }
    out = {
        "backend": backend,
        "estimator": estimator,
        "num_particles": cfg.train.num_particles,
        "device": device,
        "epochs": settings["epochs"],
        "timed_epochs": settings["epochs"] - 1,
        "train_images": n_train,
        "heldout_images": int(dataset.heldout.shape[0]),
        "hidden": settings["hidden"],
        "hand_written": None if hand is None else hand.name,
        "speed": speed,
        "heldout_elbo": record["heldout_elbo"],
        "final_train_loss": record["loss"],
        "hand_heldout_elbo": hand_elbo,
        "evaluation": evaluation,
        "peak_rss_training_mib": train_peak / 2**20,
        "rss_before_training_mib": rss0 / 2**20,
        "compile_seconds": float(getattr(ppvae_side.trainer, "compile_seconds", 0.0)),
        "load_average": {"start": load_start, "end": load_average()},
        "wall_seconds": time.perf_counter() - started,
    }
    if hand is not None:
        out["ratio"] = {
            "wall": speed["ppvae"]["seconds_per_epoch"] / speed["hand"]["seconds_per_epoch"],
            "cpu": speed["ppvae"]["cpu_seconds_per_epoch"] / speed["hand"]["cpu_seconds_per_epoch"],
            "per_epoch_wall": [a / b for a, b in zip(wall["ppvae"], wall["hand"])],
        }
    return out


# -- the driver ------------------------------------------------------------------------------
def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("ppvae", "torch", "pyro-ppl", "jax", "jaxlib", "numpyro", "equinox", "optax", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def _worker_command(backend: str, estimator: str, settings: dict, device: str, eval_k: list[int]) -> list[str]:
    job = {"backend": backend, "estimator": estimator, "settings": settings, "device": device, "eval_k": eval_k}
    return [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]


def run_suite(
    quick: bool,
    backends,
    estimators,
    device: str,
    epochs: int | None,
    k5000_all: bool,
    log=print,
    eval_k: list[int] | None = None,
    partial: Path | None = None,
) -> dict:
    settings = dict(QUICK if quick else FULL)
    if epochs is not None:
        settings["epochs"] = epochs
    if eval_k is not None:
        settings["eval_k"] = eval_k
    if settings["epochs"] < 2:
        raise SystemExit("--epochs must be at least 2 (one warm-up epoch, then timed epochs)")
    small_k, big_k = settings["eval_k"]
    result = {
        "protocol": PROTOCOL,
        "mode": "quick" if quick else "full",
        "settings": settings,
        "model": "mlp-400 (models/mlp-400.toml), Z = 20, Bernoulli, batch 128, Adam 1e-3"
        + ("" if not quick else f"; quick: hidden {settings['hidden']}, subsets"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "device": device,
        "gpu": _gpu_note(device),
        "versions": versions(),
        "load_average_start": load_average(),
        "configs": [],
    }
    for backend in backends:
        for estimator in estimators:
            eval_k = [small_k] + ([big_k] if (k5000_all or estimator == DEFAULT_ESTIMATOR) else [])
            log(
                f"[suite] {backend} {estimator} (K = {ESTIMATORS[estimator]}), "
                f"{settings['epochs']} epochs, eval K = {eval_k}, load {load_average()}"
            )
            proc = subprocess.run(
                _worker_command(backend, estimator, settings, device, eval_k), capture_output=True, text=True, cwd=ROOT
            )
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                raise SystemExit(f"configuration {backend}/{estimator} failed:\n{tail}")
            result["configs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if partial is not None:  # a long run can be inspected (and is not lost) while it goes on
                from ppvae.runs.atomic import atomic_write_text

                atomic_write_text(partial, json.dumps(result, indent=2) + "\n")
    result["load_average_end"] = load_average()
    return result


def _gpu_note(device: str) -> str:
    if device != "cpu":
        return f"measured on {device}"
    return "no GPU on this machine: CPU figures only; GPU figures are to be taken with --device cuda on a GPU machine"


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    s = result["settings"]
    m = result["machine"]
    lines = [
        f"Command: `python bench/suite.py{' --quick' if result['mode'] == 'quick' else ''}`, "
        f"protocol {result['protocol']}, {result['model']}; {s['epochs']} epochs per configuration (the first "
        f"is warm-up, so s/epoch is the median of {s['epochs'] - 1}), each configuration in its own process. "
        f"Machine: {m.get('cpu_model') or m['processor']}, {m['cpu_count']} cores, "
        f"{m.get('memory_gib', '?')} GiB, OMP_NUM_THREADS={m.get('OMP_NUM_THREADS')}; device {result['device']} "
        f"({result['gpu']}). Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ". "
        f"Date {result['date']}; load average {result['load_average_start']} at the start, "
        f"{result['load_average_end']} at the end. Raw: `bench/results/suite.json`.",
        "",
        "Speed (ratio = ppvae / hand-written, medians of the same run, epochs interleaved; the CPU ratio uses "
        "process CPU time, steadier on a shared machine):",
        "",
        "| backend | estimator | s/epoch | images/s | hand-written | hand s/epoch | ratio (wall) | ratio (CPU) "
        "| peak RSS, training (MiB) |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in result["configs"]:
        sp, hand = c["speed"]["ppvae"], c["speed"].get("hand")
        est = c["estimator"] + (f" K={c['num_particles']}" if c["num_particles"] > 1 else "")
        lines.append(
            f"| {c['backend']} | {est} | {sp['seconds_per_epoch']:.3f} | {sp['images_per_s']:,.0f} | "
            f"{c['hand_written'] or '— (none)'} | {_f(hand and hand['seconds_per_epoch'], '{:.3f}')} | "
            f"{_f(c.get('ratio', {}).get('wall'), '{:.3f}')} | {_f(c.get('ratio', {}).get('cpu'), '{:.3f}')} | "
            f"{c['peak_rss_training_mib']:.0f} |"
        )
    small_k, big_k = (str(k) for k in s["eval_k"])
    lines += [
        "",
        f"Quality after {s['epochs']} epochs (nats per image, {result['configs'][0]['heldout_images'] if result['configs'] else ''} "
        f"held-out images; log p(x) by the IWAE bound; evaluation time and the peak resident memory the "
        f"evaluation added):",
        "",
        f"| backend | estimator | held-out ELBO | hand-written ELBO | log p(x) K={small_k} | time | +RSS MiB "
        f"| log p(x) K={big_k} | time | +RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in result["configs"]:
        ev = c["evaluation"]
        a, b = ev.get(small_k), ev.get(big_k)
        est = c["estimator"] + (f" K={c['num_particles']}" if c["num_particles"] > 1 else "")
        cells = []
        for e in (a, b):
            cells += (
                ["—", "—", "—"]
                if e is None
                else [f"{e['log_px']:.2f}", f"{e['seconds']:.1f} s", f"{e['peak_rss_added_mib']:.0f}"]
            )
        lines.append(
            f"| {c['backend']} | {est} | {c['heldout_elbo']:.2f} | {_f(c['hand_heldout_elbo'])} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_results_md(path: Path, section: str) -> None:
    from ppvae.runs.atomic import atomic_write_text

    text = path.read_text()
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Benchmark suite (issue 6) — `python bench/suite.py`\n\n" + block + "\n"
    atomic_write_text(path, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny network, subsets, 2 epochs")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for suite.json (and suite.md); default bench/results (full mode only)",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs per configuration (full: 10, quick: 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--k5000-all", action="store_true", help="log p(x) with the large K for every row")
    parser.add_argument(
        "--eval-k", default=None, metavar="SMALL,LARGE", help="the two K of log p(x) (default 1000,5000; quick: 20,50)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(run_config(job["backend"], job["estimator"], job["settings"], job["device"], job["eval_k"])))
        return
    backends = [b for b in args.backends.split(",") if b]
    estimators = [e for e in args.estimators.split(",") if e]
    unknown = [b for b in backends if b not in BACKENDS] + [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise SystemExit(
            f"unknown backend/estimator {', '.join(unknown)}; valid: {', '.join(BACKENDS)}; {', '.join(ESTIMATORS)}"
        )
    if args.quick and args.out is None:
        raise SystemExit("--quick writes only where --out says (a scratch folder), never bench/RESULTS.md")
    eval_k = None
    if args.eval_k is not None:
        try:
            eval_k = [int(k) for k in args.eval_k.split(",")]
        except ValueError:
            eval_k = []
        if len(eval_k) != 2 or min(eval_k) < 1:
            raise SystemExit(f"--eval-k {args.eval_k}: give two positive numbers of samples, e.g. 1000,5000")
    out = args.out or HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = run_suite(
        args.quick,
        backends,
        estimators,
        args.device,
        args.epochs,
        args.k5000_all,
        log=lambda msg: print(msg, file=sys.stderr),
        eval_k=eval_k,
        partial=out / "suite.partial.json",
    )
    section = markdown(result)
    from ppvae.runs.atomic import atomic_write_text

    atomic_write_text(out / "suite.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "suite.md", section)
    (out / "suite.partial.json").unlink(missing_ok=True)
    if not args.quick and args.out is None:
        write_results_md(HERE / "RESULTS.md", section)
    print(section)


if __name__ == "__main__":
    main()
