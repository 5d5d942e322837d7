"""The Python API: fit a spec on data, load a run, and use the trained VAE.

The backend is chosen by name (``train.backend``) and imported only when needed; this
module speaks numpy and plain Python.

Examples
--------
>>> import ppvae
>>> run = ppvae.fit(latent_dim=2, epochs=1, out="runs/tiny")       # doctest: +SKIP
>>> loc, scale = run.encode(run.heldout()[:10])                    # doctest: +SKIP
>>> images = run.sample(16)                                        # doctest: +SKIP
>>> run.evaluate(num_samples=100)["heldout_log_px"]                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ppvae.spec import registry
from ppvae.model.conditioning import infer_num_classes, sample_labels
from ppvae.spec.config import Config, ModelSpec, TrainSpec
from ppvae.data import Dataset, absolute_source, load_dataset, load_source
from ppvae.backends.base import Backend
from ppvae.errors import DataError, UsageError
from ppvae.runs.folder import RunFolder, default_run_dir

__all__ = ["fit", "load", "Run", "build_config", "SHORTCUTS"]

log = logging.getLogger(__name__)

#: Keyword shortcuts of :func:`fit` (and the CLI's options) -> dotted config keys.
SHORTCUTS = {
    **{f.name: f"model.{f.name}" for f in dataclasses.fields(ModelSpec) if not f.name.endswith("_options")},
    **{f.name: f"train.{f.name}" for f in dataclasses.fields(TrainSpec)},
    "data": "data.source",
}


def build_config(spec: str | Path | Mapping | Config | None = None,
                 overrides: Mapping[str, Any] | None = None, *, plugins: Sequence[str | Path] = (),
                 **shortcuts) -> Config:
    """Resolve a spec (file, tables or Config), then ``--set``-style overrides, then shortcuts.

    Parameters
    ----------
    spec : path, dict or Config, optional
        A TOML spec file, nested tables, or a Config; defaults to the built-in defaults.
    overrides : dict, optional
        Dotted keys, e.g. ``{"model.encoder_options.hidden": [512]}``.
    plugins : sequence of path, optional
        Plug-in files to load besides the spec's own ``plugins``; the result lists them all
        as absolute paths, and they are loaded (so the spec's components can be looked up).
    **shortcuts
        Any of :data:`SHORTCUTS` (``latent_dim=2``, ``epochs=5``, ``data="mnist"``, ...);
        ``None`` values are ignored.
    """
    if spec is None:
        cfg = Config()
    elif isinstance(spec, Config):
        cfg = spec
    elif isinstance(spec, Mapping):
        cfg = Config.from_dict(spec)
    else:
        cfg = Config.from_toml(spec)
    if overrides:
        cfg = cfg.with_overrides(dict(overrides))
    unknown = sorted(set(shortcuts) - set(SHORTCUTS))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(SHORTCUTS))}")
    chosen = {SHORTCUTS[k]: v for k, v in shortcuts.items() if v is not None}
    cfg = cfg.with_overrides(chosen) if chosen else cfg
    return _with_plugins(cfg, plugins)


def _with_plugins(cfg: Config, extra: Sequence[str | Path] = (), origin: str | None = None) -> Config:
    """Load the spec's plug-ins and ``extra`` ones; record all of them as absolute paths."""
    from ppvae.spec.plugins import load_plugins

    if not cfg.plugins and not extra:
        return cfg
    paths = tuple(load_plugins([*cfg.plugins, *extra], origin=origin))
    return dataclasses.replace(cfg, plugins=paths) if paths != cfg.plugins else cfg


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in a multi-process job (torchrun's RANK and WORLD_SIZE), else (0, 1)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError("RANK and WORLD_SIZE must be integers (torchrun sets them); unset them to train "
                         "in one process") from None


def _likelihood_support(cfg: Config) -> str:
    comp = registry.get("likelihood", cfg.model.likelihood, cfg.train.backend)
    return getattr(comp.factory, "support", "real")


def resolve_config(cfg: Config) -> Config:
    """Fill every component setting with its default, so that config.toml is complete.

    ``fit`` resolves its spec with this; ``compare`` and the benchmarks use it to build
    exactly the configuration a fit would train.
    """
    model = dataclasses.replace(cfg.model, **{
        f"{kind}_options": registry.resolve_options(kind, getattr(cfg.model, kind), cfg.train.backend,
                                                    cfg.model.options(kind))
        for kind in registry.KINDS
    })
    return dataclasses.replace(cfg, model=model)


def _data_info(ds: Dataset) -> dict:
    return {"name": ds.name, "event_shape": list(ds.event_shape), "is_image": ds.is_image,
            "binarize": ds.binarize, "num_train": int(ds.train.shape[0]),
            "num_heldout": int(ds.heldout.shape[0]), "has_labels": ds.heldout_labels is not None,
            "transform": ds.transform}


def _versions(backend: Backend) -> dict:
    """Versions of Python, ppvae, numpy and the backend's own packages, for summary.json."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("ppvae", "numpy", *backend.PACKAGES):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def fit(spec: str | Path | Mapping | Config | None = None, *, out: str | Path | None = None,
        resume: str | Path | None = None, force: bool = False, progress: bool = False,
        overrides: Mapping[str, Any] | None = None, stop_after_steps: int | None = None,
        pictures: bool = True, echo: Callable[[str], None] | None = None,
        plugins: Sequence[str | Path] = (), **shortcuts) -> "Run":
    """Train a VAE and write its run folder.

    Parameters
    ----------
    spec : path, dict or Config, optional
        The spec (defaults: mlp-400 VAE, Z = 20, Bernoulli likelihood, embedded MNIST digits).
    out : path, optional
        Run folder to create (default ``runs/run-<timestamp>``).
    resume : path, optional
        Continue the run in this folder from its last checkpoint (its config.toml is the
        spec; ``epochs`` may be raised to train longer).
    force : bool
        Overwrite an existing run folder's files.
    progress : bool
        Show progress bars.
    overrides : dict, optional
        Dotted-key settings, as ``--set`` on the command line.
    stop_after_steps : int, optional
        Stop (with a checkpoint) after this many optimizer steps; for tests and debugging.
    pictures : bool
        Write samples.png, reconstructions.png and loss.png.
    echo : callable, optional
        Receives one-line progress messages (the CLI prints them).
    plugins : sequence of path, optional
        Plug-in files that register custom components (besides the spec's ``plugins``);
        their absolute paths are recorded in ``config.toml``, so the run reloads them.
    **shortcuts
        ``latent_dim``, ``likelihood``, ``epochs``, ``beta``, ``data``, ... (see :data:`SHORTCUTS`).

    Returns
    -------
    Run
        The trained, evaluated run.

    Examples
    --------
    >>> run = ppvae.fit(epochs=2, latent_dim=2, out="runs/demo")          # doctest: +SKIP
    >>> run.summary["evaluation"]["heldout_log_px"]                      # doctest: +SKIP
    """
    say = echo or (lambda msg: log.info(msg))
    rank, world = process_rank()
    if rank:
        # A multi-process job: rank 0 prints and writes the run folder, the others only train.
        say, progress = (lambda msg: None), False
    if resume is not None:
        folder = RunFolder(resume)
        folder.check_exists()
        saved = folder.read_config()
        cfg = build_config(saved, overrides, plugins=plugins, **shortcuts)
    else:
        cfg = build_config(spec, overrides, plugins=plugins, **shortcuts)
        folder = RunFolder(out if out is not None else default_run_dir())
    # config.toml records the source; a relative path would break once used from elsewhere.
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=absolute_source(cfg.data.source)))
    backend = registry.load_backend(cfg.train.backend)
    if world > 1 and cfg.train.backend != "pyro":
        raise UsageError(f"training on several processes (WORLD_SIZE={world}) is for the pyro backend; the "
                         f"{cfg.train.backend} backend spreads batches over devices in one process with "
                         "--num-devices N (train.num_devices)")
    cfg = resolve_config(cfg)
    if resume is not None:
        changed = [f"{sec}.{f.name}" for sec in ("model", "data") for f in dataclasses.fields(getattr(cfg, sec))
                   if getattr(getattr(cfg, sec), f.name) != getattr(getattr(resolve_config(saved), sec), f.name)
                   and f.name not in ("cache_dir", "mirror")]
        if changed or cfg.train.backend != saved.train.backend:
            raise UsageError(
                f"--resume continues {str(folder.path)!r} with its own model and data; these settings differ: "
                f"{', '.join(changed) or 'train.backend'}. Drop them, or start a new run with --out"
            )
    dataset = load_dataset(cfg.data, cfg.model.likelihood, _likelihood_support(cfg))
    # Record what "auto" resolved to, so config.toml reproduces the run exactly.
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, binarize=dataset.binarize, scale=dataset.transform.get("scale", cfg.data.scale),
        stream=dataset.streaming))
    if cfg.model.conditional:
        # num_classes = 0 becomes the training labels' count; config.toml records the number,
        # so the run reloads without its data. No labels, or labels out of range: a DataError.
        classes = infer_num_classes(cfg.model.num_classes, dataset.train_labels, dataset.heldout_labels,
                                    dataset.name)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))
    if resume is None and not rank:
        folder.prepare_new(force=force)

    def record_config() -> None:
        # Called by the backend once the model is built and any checkpoint has loaded, so
        # a refused resume (or an unusable device) leaves the run folder untouched.
        if rank:
            return
        folder.write_config(cfg)
        folder.write_data_info(_data_info(dataset))

    say(f"training on {dataset.name}: {dataset.train.shape[0]} train / {dataset.heldout.shape[0]} held-out, "
        f"datapoint shape {tuple(dataset.event_shape)}; run folder {folder.path}")
    started = time.perf_counter()
    trained, records = backend.fit(cfg, dataset, folder.path, resume=resume is not None, progress=progress,
                                   on_start=record_config, on_epoch=None if rank else folder.write_metrics,
                                   stop_after_steps=stop_after_steps)
    if rank:  # rank 0 evaluates and reports; this process's Run has no summary
        return Run(folder.path, cfg=cfg, trained=trained, dataset=dataset, data_info=_data_info(dataset))
    folder.write_metrics(records)
    run = Run(folder.path, cfg=cfg, trained=trained, dataset=dataset)
    if stop_after_steps is not None and (not records or records[-1]["epoch"] < cfg.train.epochs):
        return run
    say(f"evaluating log p(x) with K = {cfg.train.eval_num_samples} importance samples "
        f"on {dataset.heldout.shape[0]} held-out points")
    evaluation = run.evaluate(num_samples=cfg.train.eval_num_samples)
    summary = {
        "backend": cfg.train.backend, "device": trained.device_name, "elbo": cfg.train.elbo,
        "epochs": len(records), "steps": records[-1]["step"] if records else 0,
        "train_seconds": float(sum(r["seconds"] for r in records)),
        "compile_seconds": float(trained.compile_seconds),
        "wall_seconds_this_session": time.perf_counter() - started,
        "final_epoch": records[-1] if records else None, "evaluation": evaluation,
        "data": dataset.name, "versions": _versions(backend),
    }
    folder.write_summary(summary)
    run.summary = summary
    if pictures:
        from ppvae.plotting.run_pictures import write_run_pictures

        write_run_pictures(run, records)
    return run


def load(path: str | Path, device: str = "auto") -> "Run":
    """Open a run folder written by :func:`fit`.

    Examples
    --------
    >>> run = ppvae.load("runs/demo")                    # doctest: +SKIP
    >>> x = run.sample(8)                                # doctest: +SKIP
    """
    folder = RunFolder(path)
    folder.check_exists()
    return Run(folder.path, device=device)


class Run:
    """A trained run: its config, metrics and summary, and the VAE to use.

    Inputs and outputs are numpy arrays in the model's data space (prepared like the
    training data: scaled, standardized or binarized as the run's ``data.json`` says).
    Use :meth:`prepare` to bring raw data there.
    """

    def __init__(self, path: str | Path, *, cfg: Config | None = None, trained=None,
                 dataset: Dataset | None = None, device: str = "auto", data_info: dict | None = None):
        self.folder = RunFolder(path)
        self.path = self.folder.path
        self.config = cfg or _with_plugins(self.folder.read_config(), origin=f"{self.folder.path / 'config.toml'}")
        # Given by fit on a process other than rank 0, whose machine may not see the run folder.
        self.data_info = self.folder.read_data_info() if data_info is None else data_info
        self.summary = None if data_info is not None else self.folder.read_summary()
        self._trained = trained
        self._dataset = dataset
        self._device = device

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, backend={self.config.train.backend!r})"

    # -- the trained model ---------------------------------------------------------------------
    @property
    def trained(self):
        """The backend's trained-model object (loaded lazily from the checkpoint)."""
        if self._trained is None:
            backend = registry.load_backend(self.config.train.backend)
            self._trained = backend.load(self.path, self.config, tuple(self.data_info["event_shape"]),
                                         device=self._device)
        return self._trained

    @property
    def model(self) -> Callable:
        """The Pyro model callable ``model(x, beta=None, *, y=None)`` (sites ``"z"``, ``"x"``, plate ``"data"``).

        A conditional run's model needs the integer labels ``y``.
        """
        return self.trained.model

    @property
    def guide(self) -> Callable:
        """The Pyro guide callable ``guide(x, beta=None, *, y=None)``: the amortized encoder q(z|x)."""
        return self.trained.guide

    @property
    def num_classes(self) -> int:
        """C of a conditional run (``model.conditional = true``), 0 for an unconditional one."""
        m = self.config.model
        return m.num_classes if m.conditional else 0

    @property
    def event_shape(self) -> tuple:
        return tuple(self.data_info["event_shape"])

    def metrics(self) -> list[dict]:
        """The per-epoch records of ``metrics.jsonl``."""
        return self.folder.read_metrics()

    # -- data ----------------------------------------------------------------------------------
    def dataset(self) -> Dataset:
        """The run's own prepared dataset (re-read from its source)."""
        if self._dataset is None:
            self._dataset = load_dataset(self.config.data, self.config.model.likelihood,
                                         _likelihood_support(self.config))
        return self._dataset

    def heldout(self) -> np.ndarray:
        """The run's held-out split, prepared.

        For a streamed run (``data.stream``) a :class:`~ppvae.data.streaming.StreamingRows`
        read on demand: slice it (``run.heldout()[:100]``) or iterate ``.chunks()``.
        """
        return self.dataset().heldout

    def load_data(self, source: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Data for evaluate/encode/reconstruct: the held-out split, or ``source`` prepared like it."""
        if source is None:
            ds = self.dataset()
            return ds.heldout, ds.heldout_labels
        return load_source(source, self.config.data, self.data_info["transform"])

    def _check(self, x: np.ndarray, what: str = "x") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2 and len(self.event_shape) > 1 and x.shape[1] == int(np.prod(self.event_shape)):
            x = x.reshape(len(x), *self.event_shape)
        if tuple(x.shape[1:]) != self.event_shape:
            raise UsageError(f"{what} has datapoints of shape {tuple(x.shape[1:])}, but this run expects "
                             f"{self.event_shape}")
        return x

    # -- uses ------------------------------------------------------------------------------------
    # A conditional run (``num_classes > 0``) needs ``labels``, one integer per datapoint
    # (an int means the same class for all); an unconditional run refuses them.
    def encode(self, x: np.ndarray, labels: np.ndarray | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior loc and scale of q(z|x) (q(z|x,y) given ``labels`` when conditional): the codes."""
        return self.trained.encode(self._check(x), y=labels)

    def decode(self, z: np.ndarray, labels: np.ndarray | int | None = None) -> np.ndarray:
        """Mean of p(x|z) (p(x|z,y) given ``labels`` when conditional) for latents ``(n, latent_dim)``."""
        z = np.asarray(z, dtype=np.float32)
        dim = self.config.model.latent_dim
        if z.ndim != 2 or z.shape[1] != dim:
            raise UsageError(f"latents must have shape (n, {dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise UsageError("latents contain NaN or inf; give finite values")
        return self.trained.decode(z, y=labels)

    def reconstruct(self, x: np.ndarray, labels: np.ndarray | int | None = None) -> np.ndarray:
        """Encode then decode (posterior mean): compression and recovery (``labels``: as :meth:`encode`)."""
        return self.trained.reconstruct(self._check(x), y=labels)

    def sample(self, n: int, seed: int = 0, labels: np.ndarray | int | None = None) -> np.ndarray:
        """``n`` new datapoints: means of p(x|z) for z drawn from the prior.

        For a conditional run, ``labels`` picks the class of every sample (an int) or of each
        (``n`` ints); without it the classes take turns: 0, 1, ..., C-1, 0, 1, ...

        Examples
        --------
        >>> threes = run.sample(16, labels=3)                              # doctest: +SKIP
        """
        if not (isinstance(n, int) and n > 0):
            raise UsageError(f"number of samples must be a positive integer, got {n!r}")
        if self.num_classes:
            labels = sample_labels(self.num_classes, n, labels)
        return self.trained.sample(n, seed=seed, y=labels)

    def evaluate(self, x: np.ndarray | None = None, num_samples: int = 1000, seed: int = 0,
                 labels: np.ndarray | None = None) -> dict:
        """Held-out ELBO, reconstruction, KL, IWAE log p(x) with K = ``num_samples``, active units.

        Where labels exist (the held-out split's, or ``labels`` for ``x``) and the training
        split has labels too, also ``linear_probe_accuracy``: a logistic regression trained on
        the latent means of the training split and scored on the evaluated points, with
        ``linear_probe`` saying which points each side used.

        Parameters
        ----------
        x : numpy.ndarray, optional
            Prepared data; defaults to the run's held-out split (and its labels).
        num_samples : int
            K of the importance-weighted bound (chunked: memory does not grow with K).
        seed : int
            Seed of the importance samples.
        labels : numpy.ndarray, optional
            One integer label per row of ``x``, for the linear probe. A conditional run
            needs them (the numbers are then of log p(x|y)).
        """
        if not (isinstance(num_samples, int) and num_samples > 0):
            raise UsageError(f"--num-samples must be a positive integer, got {num_samples!r}")
        if x is None and self.dataset().streaming:
            # A streamed held-out split is evaluated chunk by chunk (it has no labels to probe).
            from ppvae.inference.chunked_evaluation import evaluate_in_chunks

            return evaluate_in_chunks(self.trained, self.heldout(), num_samples=num_samples, seed=seed,
                                      is_image=bool(self.data_info.get("is_image")))
        if x is None:
            x, labels, scored_on = self.heldout(), self.dataset().heldout_labels, "held-out split"
        else:
            x, scored_on = self._check(x), "the evaluated data"
        ev = self.trained.evaluate(x, num_samples=num_samples, seed=seed,
                                   is_image=bool(self.data_info.get("is_image")),
                                   y=labels if self.num_classes else None)
        ev.update(self._linear_probe(x, labels, scored_on))
        return ev

    def _linear_probe(self, x: np.ndarray, labels: np.ndarray | None, scored_on: str) -> dict:
        """``linear_probe_accuracy`` and what it used, or nothing where labels are missing."""
        from ppvae.data.arrays import check_labels
        from ppvae.inference.metrics import PROBE_MAX_TRAIN, linear_probe_accuracy

        if labels is None:
            return {}
        labels = check_labels(labels, len(x), "the labels")
        if self.dataset().train_labels is None:
            return {}
        train_loc, train_labels = self.training_codes(PROBE_MAX_TRAIN)
        cond = self.num_classes > 0  # a conditional encoder is given each point's own label
        probe = linear_probe_accuracy(train_loc, train_labels, self.encode(x, labels if cond else None)[0], labels)
        if probe is None:
            return {}
        return {"linear_probe_accuracy": probe["accuracy"],
                "linear_probe": {"trained_on": f"training split, latent means of {probe['num_train']} points",
                                 "scored_on": f"{scored_on}, {probe['num_test']} points",
                                 "num_classes": probe["num_classes"]}}

    def training_codes(self, max_points: int = 10_000) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior means of the training split (a seeded subset of ``max_points`` beyond), and its labels.

        Where training binarized every minibatch afresh, the split is binarized once with a
        fixed seed, as the model saw it (and as the held-out split is).
        """
        ds = self.dataset()
        train, train_labels = ds.train, ds.train_labels
        if len(train) > max_points:
            keep = np.sort(np.random.default_rng(0).choice(len(train), max_points, replace=False))
            train, train_labels = train[keep], None if train_labels is None else train_labels[keep]
        train = train[:]  # a streamed split becomes rows here: at most max_points of them
        if ds.binarize == "dynamic":
            train = (np.random.default_rng(1).random(train.shape) < train).astype(np.float32)
        return self.encode(train, train_labels if self.num_classes else None)[0], train_labels

    def score(self, x: np.ndarray | None = None, num_samples: int = 1000, seed: int = 0,
              labels: np.ndarray | None = None, latent_density: bool = False) -> dict:
        """Anomaly scores per datapoint: ``neg_elbo`` (-ELBO) and ``neg_log_px`` (-log p(x)).

        Both from the same ``num_samples`` draws of q(z|x) per point (see
        :mod:`ppvae.analysis.scoring`); higher means more anomalous. Also ``neg_elbo_stderr``, the
        Monte-Carlo standard error of ``neg_elbo``, and with ``latent_density`` the score
        ``neg_log_latent_density``: -log density of the point's posterior mean under a
        Gaussian mixture fit to the training split's posterior means.

        Parameters
        ----------
        x : numpy.ndarray, optional
            Prepared data (:meth:`load_data`); defaults to the run's held-out split.
        num_samples : int
            K, draws per point (the IWAE bound tightens as K grows).
        seed : int
            Seed of the draws.
        labels : numpy.ndarray, optional
            A conditional run's class labels, one per point (the scores are then of
            log p(x|y)); an unconditional run ignores them.
        latent_density : bool
            Also score by density in latent space (fits the mixture: seconds to a minute).

        Returns
        -------
        dict of numpy.ndarray
            float64 arrays of shape ``(n,)``.

        Examples
        --------
        >>> s = run.score(run.heldout()[:100], num_samples=500)     # doctest: +SKIP
        >>> s["neg_log_px"].argsort()[-5:]                           # the 5 most unusual points  # doctest: +SKIP
        """
        from ppvae.analysis.scoring import score_points

        if x is None:
            x, labels = self.heldout(), self.dataset().heldout_labels
        else:
            x = self._check(x)
        y = None
        if self.num_classes:
            if labels is None:
                raise DataError(f"{self.path} is a conditional VAE: scoring needs the class label of every point; "
                                "pass labels (an .npz with 'y', or --labels FILE)")
            y = sample_labels(self.num_classes, len(x), labels)
        if not isinstance(x, np.ndarray):
            # A streamed held-out split: scored chunk by chunk (chunk i draws with seed + i).
            parts = [score_points(self.trained, chunk, latent_dim=self.config.model.latent_dim,
                                  num_samples=num_samples, seed=seed + i, y=None)
                     for i, chunk in enumerate(x.chunks())]
            scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            x = x[:] if latent_density else x
        else:
            scores = score_points(self.trained, x, latent_dim=self.config.model.latent_dim,
                                  num_samples=num_samples, seed=seed, y=y)
        if latent_density:
            from ppvae.analysis.scoring import latent_density_scores

            scores["neg_log_latent_density"] = latent_density_scores(self.training_codes()[0],
                                                                     self.encode(x, y)[0], seed=seed)
        return scores
