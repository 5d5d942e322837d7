"""Compare inference backends and estimators on one spec: ``ppvae compare``.

Every combination of backend (``pyro``, ``numpyro``), estimator (``meanfield``,
``trace``, ``iwae``, ``dreg``) and seed is trained by :func:`ppvae.fit` on the same data split
into its own run folder, ``OUT/<backend>-<estimator>-seed<k>/``. The rows of the result
aggregate seeds: the mean and the spread (sample standard deviation over seeds) of
wall time, seconds per epoch, images per second, held-out ELBO, held-out log p(x), KL
and active units. A row whose held-out ELBO or log p(x) differs from the best row's by
more than the two rows' spreads together is marked.

``OUT`` receives ``comparison.json`` (per-seed raw numbers, aggregates, protocol and
machine facts, the config), ``comparison.md`` (the table and its footnotes) and
``comparison.png`` (held-out ELBO against cumulative training time, one line per row).

This module speaks numpy and plain Python; the backends are imported only to train.

Examples
--------
>>> from ppvae.analysis.compare import compare
>>> result = compare(backends=("pyro",), elbos=("meanfield", "iwae"), seeds=(0, 1, 2),
...                  epochs=5, out="runs/cmp")                              # doctest: +SKIP
>>> print(result.to_markdown())                                            # doctest: +SKIP
>>> result.rows[0]["metrics"]["heldout_elbo"]                              # doctest: +SKIP
{'mean': -120.3, 'spread': 0.41, 'n': 3, 'values': [...]}
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ppvae.spec import registry
from ppvae.spec.config import Config
from ppvae.inference.estimators import estimator_names, importance_weighted_names
from ppvae.errors import BackendUnavailableError, TrainingError, UsageError
from ppvae.runs.atomic import atomic_write_json, atomic_write_text
from ppvae.runs.folder import RunFolder

__all__ = [
    "compare",
    "ComparisonResult",
    "aggregate",
    "mark_vs_best",
    "add_marks",
    "parse_names",
    "parse_seeds",
    "METRICS_SHOWN",
    "DEFAULT_IWAE_PARTICLES",
    "PROTOCOL",
]

#: K used for ``iwae`` and ``dreg`` rows when the spec's ``train.num_particles`` is 1 (an
#: IWAE with K = 1 is just the ELBO).
DEFAULT_IWAE_PARTICLES = 5

#: The estimators whose K is shown in their row's label (importance-weighted bounds).
IMPORTANCE_WEIGHTED = importance_weighted_names()

#: The benchmark protocol whose data the default spec uses.
PROTOCOL = "MNIST-10k v1"

#: key -> (column title, decimals): the aggregated numbers, in table order.
METRICS_SHOWN: dict[str, tuple[str, int]] = {
    "train_seconds": ("wall time (s)", 2),
    "seconds_per_epoch": ("s/epoch", 2),
    "images_per_s": ("images/s", 0),
    "heldout_elbo": ("held-out ELBO", 2),
    "heldout_log_px": ("log p(x)", 2),
    "kl": ("KL", 2),
    "active_units": ("active units", 1),
}

#: The metrics compared with the best row (higher is better for both).
MARKED = ("heldout_elbo", "heldout_log_px")

MARKING_RULE = (
    "a row is marked * when |row mean - best mean| > spread(row) + spread(best), "
    "the spread being the sample standard deviation over seeds; differences within "
    "that are not told apart from seed-to-seed variation. Needs 2 or more seeds"
)

RESULT_FILES = ("comparison.json", "comparison.md", "comparison.png")


# ------------------------------------------------------------------------------- parsing


def parse_names(value: str | Sequence[str], what: str, valid: Sequence[str], option: str) -> tuple[str, ...]:
    """Check a list of names (or a comma-separated string) against ``valid``.

    Raises
    ------
    UsageError
        For an empty list, an unknown name (the message lists the valid ones) or a name
        given twice.
    """
    if isinstance(value, str):
        items = [v.strip().lower() for v in value.split(",")]
    else:
        items = [str(v).strip().lower() for v in value]
    items = [v for v in items if v]
    valid_text = ", ".join(valid) or "(none)"
    if not items:
        raise UsageError(f"{option} needs at least one {what}; valid {what}s: {valid_text}")
    for name in items:
        if name not in valid:
            raise UsageError(f"unknown {what} {name!r} in {option}; valid {what}s: {valid_text}")
    dupes = sorted({v for v in items if items.count(v) > 1})
    if dupes:
        raise UsageError(f"{option} lists {', '.join(dupes)} more than once; give each {what} once")
    return tuple(items)


def parse_seeds(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """Seeds as non-negative integers, from ``"0,1,2"`` or a sequence.

    Raises
    ------
    UsageError
        For no seeds, a non-integer or negative seed, or a seed given twice.
    """
    hint = "give comma-separated non-negative integers, e.g. --seeds 0,1,2"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if not any(parts):
            raise UsageError(f"--seeds needs at least one seed; {hint}")
        seeds = []
        for p in parts:
            if not p.isdigit():
                raise UsageError(f"--seeds {value!r}: {p!r} is not a non-negative integer; {hint}")
            seeds.append(int(p))
    else:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = [value]
        seeds = list(value)
        if not seeds:
            raise UsageError(f"--seeds needs at least one seed; {hint}")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                raise UsageError(f"seed {s!r} is not a non-negative integer; {hint}")
        seeds = [int(s) for s in seeds]
    dupes = sorted({s for s in seeds if seeds.count(s) > 1})
    if dupes:
        raise UsageError(f"--seeds lists {', '.join(map(str, dupes))} more than once; give each seed once")
    return tuple(seeds)


# ---------------------------------------------------------------------------- statistics


def aggregate(values: Sequence[float | None]) -> dict:
    """Mean and spread over seeds of one number.

    Non-finite and missing values are left out. The spread is the sample standard
    deviation (``ddof=1``); with fewer than two values it is 0 and ``spread_known`` is
    False (the table shows n/a).

    Returns
    -------
    dict
        ``mean``, ``spread``, ``n`` (values used), ``spread_known`` and ``values`` (as given).
    """
    raw = [None if v is None else float(v) for v in values]
    finite = np.asarray([v for v in raw if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    spread = float(finite.std(ddof=1)) if n >= 2 else 0.0
    return {"mean": mean, "spread": spread, "n": n, "spread_known": n >= 2, "values": raw}


def mark_vs_best(stats: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Compare each row's aggregate (higher is better) with the best row's.

    Parameters
    ----------
    stats : sequence of dict
        One :func:`aggregate` result per row.

    Returns
    -------
    list of dict
        Per row: ``best`` (this is the best row), ``diff`` (row mean - best mean, NaN
        when unknown), ``threshold`` (spread(row) + spread(best)) and ``marked``: True when
        ``|diff| > threshold``, False when not, None when it cannot be told (a row with
        fewer than two seeds, or no value).
    """
    means = np.asarray([s["mean"] for s in stats], dtype=np.float64)
    finite = np.isfinite(means)
    if not finite.any():
        return [{"best": False, "diff": math.nan, "threshold": math.nan, "marked": None} for _ in stats]
    best = int(np.argmax(np.where(finite, means, -np.inf)))
    b = stats[best]
    out = []
    for i, s in enumerate(stats):
        if i == best:
            out.append({"best": True, "diff": 0.0, "threshold": math.nan, "marked": False})
            continue
        diff = float(means[i] - means[best]) if finite[i] else math.nan
        threshold = float(s["spread"]) + float(b["spread"])
        known = finite[i] and s.get("spread_known", s["n"] >= 2) and b.get("spread_known", b["n"] >= 2)
        out.append(
            {
                "best": False,
                "diff": diff,
                "threshold": threshold,
                "marked": bool(abs(diff) > threshold) if known else None,
            }
        )
    return out


def add_marks(rows: Sequence[dict]) -> None:
    """Set ``row["vs_best"][key]`` (:func:`mark_vs_best`) for held-out ELBO and log p(x)."""
    for key in MARKED:
        for row, mark in zip(rows, mark_vs_best([r["metrics"][key] for r in rows])):
            row.setdefault("vs_best", {})[key] = mark


# ------------------------------------------------------------------------------- result


@dataclass
class ComparisonResult:
    """What :func:`compare` found: one row per (backend, estimator), seeds aggregated.

    Attributes
    ----------
    out : pathlib.Path
        The folder holding the run folders and the comparison files.
    rows : list of dict
        Per row: ``backend``, ``elbo``, ``num_particles``, ``label``, ``device``, ``epochs``,
        ``runs`` (per seed: folder, raw numbers, per-epoch series, or the failure),
        ``metrics`` (per key of :data:`METRICS_SHOWN`: :func:`aggregate`'s dict) and
        ``vs_best`` (per key of ``MARKED``: :func:`mark_vs_best`'s dict).
    notes : list of str
        Things a reader of the table must know (K used for iwae, one seed, failures).
    info : dict
        Protocol, machine, versions, config, estimators: the header of comparison.json.
    """

    out: Path
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def json_path(self) -> Path:
        return self.out / "comparison.json"

    @property
    def markdown_path(self) -> Path:
        return self.out / "comparison.md"

    @property
    def plot_path(self) -> Path:
        return self.out / "comparison.png"

    @property
    def failed_runs(self) -> list[str]:
        """Run folders whose training stopped with an error."""
        return [r["folder"] for row in self.rows for r in row["runs"] if r.get("error")]

    def to_dict(self) -> dict:
        """Everything, JSON-ready (NaN becomes null)."""
        return _clean(
            {**self.info, "out": str(self.out), "notes": list(self.notes), "columns": _columns(self), "rows": self.rows}
        )

    def table(self) -> list[list[str]]:
        """The table's header and rows as strings."""
        return [_columns(self)] + [_row_cells(self, row) for row in self.rows]

    def to_markdown(self, footnotes: bool = True) -> str:
        """The table in Markdown (columns padded so it reads in a terminal too), with footnotes."""
        table = self.table()
        widths = [max(len(r[j]) for r in table) for j in range(len(table[0]))]
        right = [j >= 3 for j in range(len(widths))]

        def line(cells):
            return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)) + " |"

        rule = "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right)) + " |"
        text = [line(table[0]), rule] + [line(r) for r in table[1:]]
        if footnotes:
            text += [""] + [f"- {n}" for n in _footnotes(self)]
        return "\n".join(text) + "\n"


def _columns(result: ComparisonResult) -> list[str]:
    ks = sorted({r["eval_num_samples"] for r in result.rows if r.get("eval_num_samples")})
    cols = ["backend", "estimator", "device", "epochs"]
    for key, (title, _) in METRICS_SHOWN.items():
        if key == "heldout_log_px" and len(ks) == 1:
            title = f"log p(x) (K={ks[0]})"
        cols.append(title)
    cols += ["ELBO vs best", "log p(x) vs best"]
    return cols


def _fmt(value: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _cell(stat: Mapping[str, Any], digits: int) -> str:
    if not stat["n"]:
        return "n/a"
    spread = _fmt(stat["spread"], digits) if stat["spread_known"] else "n/a"
    return f"{_fmt(stat['mean'], digits)} ± {spread}"


def _vs_best_cell(mark: Mapping[str, Any]) -> str:
    if mark["best"]:
        return "best"
    if not math.isfinite(mark["diff"]):
        return "n/a"
    return f"{mark['diff']:+.2f}" + (" *" if mark["marked"] else "")


def _row_cells(result: ComparisonResult, row: dict) -> list[str]:
    estimator = row["elbo"] + (f" (K={row['num_particles']})" if row["elbo"] in IMPORTANCE_WEIGHTED else "")
    epochs = sorted({r["epochs"] for r in row["runs"] if r.get("epochs") is not None})
    cells = [row["backend"], estimator, row["device"] or "n/a", "/".join(map(str, epochs)) or "n/a"]
    ks = {r.get("eval_num_samples") for r in result.rows}
    for key, (_, digits) in METRICS_SHOWN.items():
        text = _cell(row["metrics"][key], digits)
        if key == "heldout_log_px" and len(ks) > 1 and row["metrics"][key]["n"]:
            text += f" (K={row['eval_num_samples']})"
        cells.append(text)
    cells += [_vs_best_cell(row["vs_best"][k]) for k in MARKED]
    return cells


def _footnotes(result: ComparisonResult) -> list[str]:
    info = result.info
    seeds = info.get("seeds", [])
    notes = [
        f"Each cell: mean ± spread over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); spread = sample "
        "standard deviation over seeds (n/a with one seed). Same data split for every run.",
        f"Held-out ELBO: {info.get('heldout_elbo_estimator', '')}",
        f"log p(x): {info.get('log_px_estimator', '')}",
        f"vs best: difference from the row with the highest mean (nats per datapoint); {MARKING_RULE}.",
        "wall time: training seconds of the run as its backend times its epochs (held-out evaluation and "
        "NumPyro's ahead-of-time compilation excluded; each fit's end-to-end seconds are fit_seconds in "
        "comparison.json); s/epoch and images/s: median over the epochs after the first (warm-up), or the "
        "only epoch.",
    ]
    proto = info.get("protocol") or {}
    machine = info.get("machine") or {}
    notes.append(
        f"Data: {info.get('data', {}).get('name', '?')} "
        f"({info.get('data', {}).get('num_train', '?')} train / "
        f"{info.get('data', {}).get('num_heldout', '?')} held-out); protocol: "
        f"{proto.get('name') or 'none'}{' (' + proto['note'] + ')' if proto.get('note') else ''}; "
        f"machine: {machine.get('platform', '?')}, {machine.get('cpu_count', '?')} CPUs. "
        "Ratios to a hand-written loop are not measured here (see bench/)."
    )
    return notes + list(result.notes)


def _clean(obj: Any) -> Any:
    """NaN and inf become None, so the JSON is standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


# ------------------------------------------------------------------------------- running


def default_compare_dir() -> Path:
    """``runs/compare-YYYYmmdd-HHMMSS`` under the current folder (made unique if taken)."""
    base = Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(
            f"comparison folder {str(out)!r} already exists and is not empty; "
            "overwrite it with --force or pick another --out"
        )


def _load_backend(name: str) -> None:
    try:
        registry.load_backend(name)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{exc}, or leave {name} out of --backends") from None


def _runnable_row(base: Config, backend: str, elbo: str) -> tuple[Config, int]:
    """The row's config with its components resolved for its backend, and its K; say which backend cannot run it."""
    from ppvae.api import resolve_config

    particles = base.train.num_particles
    if elbo in IMPORTANCE_WEIGHTED and particles == 1:
        particles = DEFAULT_IWAE_PARTICLES
    try:
        train = dataclasses.replace(base.train, backend=backend, elbo=elbo, num_particles=particles)
        return resolve_config(dataclasses.replace(base, train=train)), particles
    except UsageError as exc:
        raise UsageError(
            f"the {backend} backend cannot run this spec: {str(exc).rstrip('.')}; "
            f"change the spec or leave {backend} out of --backends"
        ) from None


def _protocol(cfg: Config, data_info: Mapping[str, Any]) -> dict:
    d = cfg.data
    differs = []
    if d.source != "embedded":
        differs.append(f"data {d.source!r}")
    if d.split_seed != 0 or abs(d.heldout_fraction - 0.2) > 1e-12:
        differs.append("split")
    if cfg.model.likelihood != "bernoulli" or data_info.get("binarize") not in ("dynamic",):
        differs.append("likelihood/binarization")
    if cfg.model.conditional:
        differs.append("conditional model (log p(x|y), not log p(x))")
    if not differs:
        return {"name": PROTOCOL, "note": "", "published_K": 5000}
    return {"name": None, "note": "differs from " + PROTOCOL + " in " + ", ".join(differs)}


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def _run_numbers(folder: Path) -> dict:
    """Raw numbers of one finished run, from its summary.json and metrics.jsonl."""
    rf = RunFolder(folder)
    summary = rf.read_summary() or {}
    records = rf.read_metrics()
    ev = summary.get("evaluation") or {}
    seconds = np.asarray([r.get("seconds", math.nan) for r in records], dtype=np.float64)
    rates = np.asarray([r.get("images_per_s", math.nan) for r in records], dtype=np.float64)
    later = slice(1, None) if len(records) >= 2 else slice(None)

    def median(a):
        a = a[later]
        a = a[np.isfinite(a)]
        return float(np.median(a)) if a.size else math.nan

    return {
        "device": summary.get("device"),
        "epochs": summary.get("epochs", len(records)),
        "train_seconds": summary.get("train_seconds", float(np.nansum(seconds))),
        "seconds_per_epoch": median(seconds),
        "images_per_s": median(rates),
        "heldout_elbo": ev.get("heldout_elbo"),
        "heldout_log_px": ev.get("heldout_log_px"),
        "heldout_log_px_stderr": ev.get("heldout_log_px_stderr"),
        "eval_num_samples": ev.get("num_samples"),
        "kl": ev.get("kl"),
        "reconstruction": ev.get("reconstruction"),
        "active_units": ev.get("active_units"),
        "versions": summary.get("versions", {}),
        "series": {
            "epoch": [r.get("epoch") for r in records],
            "seconds_cumulative": [float(v) for v in np.cumsum(np.nan_to_num(seconds))],
            # The per-epoch ELBO training reported: on the validation split where the run
            # has one (its held-out split is read only by the final evaluation).
            "heldout_elbo": [r.get("heldout_elbo", r.get("validation_elbo")) for r in records],
            "split": "validation" if any("validation_elbo" in r for r in records) else "held-out",
        },
    }


def _mean_series(runs: Sequence[Mapping[str, Any]]) -> dict | None:
    """Per-epoch mean over seeds of cumulative seconds and held-out ELBO (and its spread)."""
    done = [r for r in runs if not r.get("error") and r.get("series")]
    if not done:
        return None
    length = max(len(r["series"]["epoch"]) for r in done)

    def stack(key):
        out = np.full((len(done), length), np.nan)
        for i, r in enumerate(done):
            vals = [math.nan if v is None else float(v) for v in r["series"][key]]
            out[i, : len(vals)] = vals
        return out

    secs, elbo = stack("seconds_cumulative"), stack("heldout_elbo")
    with warnings.catch_warnings():  # an epoch with no value in any seed gives NaN, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_s = np.nanmean(secs, axis=0)
        mean_e = np.nanmean(elbo, axis=0)
        spread = np.nanstd(elbo, axis=0, ddof=1) if len(done) >= 2 else np.zeros(length)
    return {"seconds": mean_s.tolist(), "elbo": mean_e.tolist(), "spread": np.nan_to_num(spread, nan=0.0).tolist()}


def compare(
    spec: str | Path | Mapping | Config | None = None,
    *,
    backends: str | Sequence[str] = ("pyro",),
    elbos: str | Sequence[str] = ("meanfield",),
    seeds: str | Sequence[int] = (0,),
    epochs: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    pictures: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Train every (backend, estimator, seed) on the same split and tabulate the results.

    Every name, the spec, the data and each backend's ability to run the spec are checked
    before anything is trained, so bad input costs nothing and leaves nothing behind.

    Parameters
    ----------
    spec : path, dict or Config, optional
        The spec every row trains (defaults as :func:`ppvae.fit`).
    backends, elbos : sequence of str, or a comma-separated string
        Backends (``pyro``, ``numpyro``) and estimators (``meanfield``, ``trace``,
        ``iwae``, ``dreg``). ``iwae`` and ``dreg`` rows use the spec's ``train.num_particles`` as K, or
        :data:`DEFAULT_IWAE_PARTICLES` when that is 1 (the table's notes say so).
    seeds : sequence of int, or a string like ``"0,1,2"``
        ``train.seed`` of the runs of every row; the spread of a row is over these.
    epochs : int, optional
        Epochs of every run (default: the spec's).
    device : str, optional
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: the spec's).
    out : path, optional
        Folder for the run folders and the comparison files (default
        ``runs/compare-<timestamp>``); an existing non-empty one is refused unless ``force``.
    overrides : dict, optional
        Dotted-key settings, as ``--set`` on the command line.
    force : bool
        Overwrite the run folders and comparison files in an existing ``out``.
    pictures : bool
        Write each run's samples.png, reconstructions.png and loss.png too.
    progress : bool
        Show each run's progress bars.
    echo : callable, optional
        Receives one-line progress messages (the CLI prints them).

    Returns
    -------
    ComparisonResult
        Rows in the order backend, then estimator; its files are written in ``out``.

    Raises
    ------
    ppvae.errors.UsageError
        Unknown backend or estimator, bad seeds, a bad spec, an existing ``out``, or a
        spec that one of the backends cannot run.
    ppvae.errors.BackendUnavailableError
        A backend whose libraries are not installed.
    """
    from ppvae import api
    from ppvae.data import absolute_source

    say = echo or (lambda msg: None)
    # 1. Names, before any import or training.
    backends = parse_names(backends, "backend", tuple(registry.BACKENDS), "--backends")
    elbos = parse_names(elbos, "estimator", estimator_names(), "--elbos")
    seeds = parse_seeds(seeds)
    # 2. The spec, the output folder, the backends and the data.
    base = api.build_config(spec, overrides, epochs=epochs, device=device)
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, source=absolute_source(base.data.source)))
    out_path = Path(out) if out is not None else default_compare_dir()
    _check_out(out_path, force)
    plan = _plan(base, backends, elbos)
    dataset = _dataset(plan[0].cfg)

    # 3. Train.
    created = not out_path.exists()
    out_path.mkdir(parents=True, exist_ok=True)
    total = len(plan) * len(seeds)
    say(
        f"comparing {_count(len(backends), 'backend')} x {_count(len(elbos), 'estimator')} x "
        f"{_count(len(seeds), 'seed')} = {_count(total, 'run')} of {_count(base.train.epochs, 'epoch')} on "
        f"{dataset.name} ({dataset.train.shape[0]} train / {dataset.heldout.shape[0]} held-out); folder {out_path}"
    )
    rows, done = [], 0
    for row in plan:
        runs = []
        for seed in seeds:
            done += 1
            say(
                f"[{done}/{total}] {row.backend} {row.elbo}{row.k_note} seed {seed} -> "
                f"{out_path / row.folder_name(seed)}"
            )
            runs.append(
                _train_one(row, seed, out_path, created, force=force, progress=progress, pictures=pictures, say=say)
            )
        rows.append(_row_summary(row, seeds, runs))
    add_marks(rows)

    # 4. Notes, info and files.
    result = ComparisonResult(out=out_path, rows=rows, notes=_notes(base, elbos, seeds))
    failed = result.failed_runs
    if failed:
        result.notes.append(
            f"{len(failed)} run(s) stopped with an error and are left out of the numbers: "
            f"{', '.join(Path(f).name for f in failed)} (see comparison.json)."
        )
    result.info = _info(spec, base, plan[0].cfg, backends, elbos, seeds, rows, dataset.info())
    _write(result, seeds)
    return result


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class _Row:
    """One row of the comparison before training: a backend, an estimator and its config."""

    backend: str
    elbo: str
    num_particles: int
    cfg: Config

    @property
    def k_note(self) -> str:
        return f" (K={self.num_particles})" if self.elbo in IMPORTANCE_WEIGHTED else ""

    def folder_name(self, seed: int) -> str:
        return f"{self.backend}-{self.elbo}-seed{seed}"


def _plan(base: Config, backends: Sequence[str], elbos: Sequence[str]) -> list[_Row]:
    """Every row's config, each checked runnable on its backend before anything trains."""
    for b in backends:
        _load_backend(b)
    plan = []
    for b in backends:
        for e in elbos:
            cfg, particles = _runnable_row(base, b, e)
            plan.append(_Row(b, e, particles, cfg))
    return plan


def _dataset(cfg: Config):
    """The data every row trains on, loaded (and its labels checked) before training anything."""
    from ppvae.data import load_dataset
    from ppvae.model.conditioning import infer_num_classes

    support = registry.likelihood_support(cfg.model.likelihood, cfg.train.backend)
    dataset = load_dataset(cfg.data, cfg.model.likelihood, support)
    if cfg.model.conditional:  # labels missing or out of range: say so before training anything
        infer_num_classes(cfg.model.num_classes, dataset.train_labels, dataset.heldout_labels, dataset.name)
    return dataset


def _train_one(
    row: _Row,
    seed: int,
    out_path: Path,
    created: bool,
    *,
    force: bool,
    progress: bool,
    pictures: bool,
    say: Callable[[str], None],
) -> dict:
    """Train one run of ``row`` at ``seed``; its figures, or the error that stopped its training."""
    from ppvae import api

    folder = out_path / row.folder_name(seed)
    run_cfg = dataclasses.replace(row.cfg, train=dataclasses.replace(row.cfg.train, seed=seed))
    started = time.perf_counter()
    try:
        api.fit(run_cfg, out=folder, force=force, progress=progress, pictures=pictures)
    except TrainingError as exc:
        say(f"      stopped: {exc}")
        return {"seed": seed, "folder": str(folder), "error": str(exc), "fit_seconds": time.perf_counter() - started}
    except BaseException:
        # A run that could not start leaves no empty folders behind.
        for path in (folder, out_path if created else None):
            if path is not None and path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise
    nums = _run_numbers(folder)
    nums.update(seed=seed, folder=str(folder), error=None, fit_seconds=time.perf_counter() - started)
    elbo_value = nums["heldout_elbo"] if nums["heldout_elbo"] is not None else math.nan
    say(
        f"      done: {nums['epochs']} epoch(s), {nums['train_seconds']:.1f} s of training, "
        f"held-out ELBO {_fmt(elbo_value, 2)}"
    )
    return nums


def _row_summary(row: _Row, seeds: Sequence[int], runs: list[dict]) -> dict:
    """A row of the table: its runs, and the statistics over the runs that finished."""
    ok = [r for r in runs if not r.get("error")]
    devices = sorted({str(r["device"]) for r in ok if r.get("device")})
    ks = sorted({r["eval_num_samples"] for r in ok if r.get("eval_num_samples")})
    return {
        "backend": row.backend,
        "elbo": row.elbo,
        "num_particles": row.num_particles,
        "label": f"{row.backend} · {row.elbo}{row.k_note}",
        "device": ", ".join(devices),
        "epochs": ok[0]["epochs"] if ok else None,
        "eval_num_samples": ks[0] if ks else row.cfg.train.eval_num_samples,
        "seeds": list(seeds),
        "runs": runs,
        "metrics": {k: aggregate([r.get(k) for r in ok]) for k in METRICS_SHOWN},
        "heldout_log_px_stderr": [r.get("heldout_log_px_stderr") for r in ok],
        "series": _mean_series(runs),
    }


def _notes(base: Config, elbos: Sequence[str], seeds: Sequence[int]) -> list[str]:
    notes = []
    weighted = [e for e in elbos if e in IMPORTANCE_WEIGHTED]
    if weighted and base.train.num_particles == 1:
        notes.append(
            f"{' and '.join(weighted)} rows train with K = {DEFAULT_IWAE_PARTICLES} importance samples "
            "per datapoint "
            "(the spec's train.num_particles is 1, for which IWAE is the ELBO); set another K with "
            "--set train.num_particles=N."
        )
    if len(seeds) < 2:
        notes.append("One seed: no spread is known, so no difference is marked; use --seeds 0,1,2 to mark them.")
    return notes


def _info(spec, base: Config, first: Config, backends, elbos, seeds, rows, data_info: dict) -> dict:
    """comparison.json's record of how the numbers were made."""
    versions: dict = {}
    for row in rows:
        for r in row["runs"]:
            versions.update(r.get("versions") or {})
    return {
        "format": "ppvae-compare/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": str(spec) if isinstance(spec, (str, Path)) else None,
        "backends": list(backends),
        "elbos": list(elbos),
        "seeds": list(seeds),
        "protocol": _protocol(first, data_info),
        "machine": _machine(),
        "versions": versions,
        "data": data_info,
        "config": first.to_dict(),
        "config_note": "the spec as resolved for the first row; train.backend, train.elbo, train.num_particles "
        "and train.seed vary by run (each run folder's config.toml has its own)",
        "heldout_elbo_estimator": "mean over held-out points of -[reconstruction from one draw z ~ q(z|x) + "
        "KL(q(z|x) || p(z)), analytic where a closed form exists, else sampled], the "
        "same estimator for every row whatever its training estimator; nats per datapoint.",
        "log_px_estimator": "the importance-weighted (IWAE) bound log mean_k p(x, z_k) / q(z_k|x) with K "
        f"samples per held-out point (train.eval_num_samples = {base.train.eval_num_samples}); "
        "a lower bound on log p(x) that tightens as K grows.",
        "marking_rule": MARKING_RULE,
    }


def _write(result: ComparisonResult, seeds: Sequence[int]) -> None:
    """comparison.json, comparison.md and the ELBO-against-time picture, each written atomically."""
    from ppvae.plotting.curves import elbo_vs_time

    atomic_write_json(result.json_path, result.to_dict())
    atomic_write_text(result.markdown_path, result.to_markdown())
    series = {row["label"]: row["series"] for row in result.rows if row["series"] is not None}
    if series and any(np.isfinite(np.asarray(s["elbo"], dtype=float)).any() for s in series.values()):
        how = f"mean over {len(seeds)} seeds, band: ± 1 sd over seeds" if len(seeds) > 1 else f"seed {seeds[0]}"
        splits = {r["series"]["split"] for row in result.rows for r in row["runs"] if r.get("series")}
        which = "validation" if splits == {"validation"} else "held-out" if splits <= {"held-out"} else "per-epoch"
        elbo_vs_time(series, result.plot_path, title=f"{which} ELBO against training time ({how})")
    else:  # nothing to draw (every run failed): no stale picture from an earlier --force
        result.plot_path.unlink(missing_ok=True)
