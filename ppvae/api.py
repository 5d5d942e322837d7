"""The Python API: build a spec's Config and fit it on data.

:func:`fit` returns a :class:`~ppvae.run.Run` (the run folder and its trained VAE, in
:mod:`ppvae.run`, with :func:`~ppvae.run.load`). The backend is chosen by name
(``train.backend``) and imported only when needed; this module speaks numpy and plain
Python.

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


from ppvae.spec import registry
from ppvae.model.conditioning import infer_num_classes
from ppvae.spec.config import Config, ModelSpec, TrainSpec
from ppvae.data import absolute_source, load_dataset
from ppvae.backends.base import Backend
from ppvae.errors import UsageError
from ppvae.inference.metrics import collapse_warning
from ppvae.inference.selection import best_epoch, selection_note, should_stop
from ppvae.runs.folder import RunFolder, default_run_dir
from ppvae.runs.tensorboard import TensorBoardLog, require_tensorboard
from ppvae.run import Run, load
from ppvae.spec.plugins import with_plugins

__all__ = ["fit", "load", "Run", "build_config", "SHORTCUTS"]

log = logging.getLogger(__name__)

#: Keyword shortcuts of :func:`fit` (and the CLI's options) -> dotted config keys.
SHORTCUTS = {
    **{f.name: f"model.{f.name}" for f in dataclasses.fields(ModelSpec) if not f.name.endswith("_options")},
    **{f.name: f"train.{f.name}" for f in dataclasses.fields(TrainSpec)},
    "data": "data.source",
    "validation_fraction": "data.validation_fraction",
}


def build_config(
    spec: str | Path | Mapping | Config | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    plugins: Sequence[str | Path] = (),
    **shortcuts,
) -> Config:
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
    # A path object for the data is the path it names (config.toml holds text).
    chosen = {
        SHORTCUTS[k]: os.fspath(v) if k == "data" and isinstance(v, os.PathLike) else v
        for k, v in shortcuts.items()
        if v is not None
    }
    cfg = cfg.with_overrides(chosen) if chosen else cfg
    return with_plugins(cfg, plugins)


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in a multi-process job (torchrun's RANK and WORLD_SIZE), else (0, 1)."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(
            "RANK and WORLD_SIZE must be integers (torchrun sets them); unset them to train in one process"
        ) from None


def resolve_config(cfg: Config) -> Config:
    """Fill every component setting with its default, so that config.toml is complete.

    ``fit`` resolves its spec with this; ``compare`` and the benchmarks use it to build
    exactly the configuration a fit would train.
    """
    model = dataclasses.replace(
        cfg.model,
        **{
            f"{kind}_options": registry.resolve_options(
                kind, getattr(cfg.model, kind), cfg.train.backend, cfg.model.options(kind)
            )
            for kind in registry.KINDS
        },
    )
    return dataclasses.replace(cfg, model=model)


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


def fit(
    spec: str | Path | Mapping | Config | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
    stop_after_steps: int | None = None,
    pictures: bool = True,
    echo: Callable[[str], None] | None = None,
    plugins: Sequence[str | Path] = (),
    **shortcuts,
) -> "Run":
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
        raise UsageError(
            f"training on several processes (WORLD_SIZE={world}) is for the pyro backend; the "
            f"{cfg.train.backend} backend spreads batches over devices in one process with "
            "--num-devices N (train.num_devices)"
        )
    cfg = resolve_config(cfg)
    if resume is not None:
        changed = [
            f"{sec}.{f.name}"
            for sec in ("model", "data")
            for f in dataclasses.fields(getattr(cfg, sec))
            if getattr(getattr(cfg, sec), f.name) != getattr(getattr(resolve_config(saved), sec), f.name)
            and f.name not in ("cache_dir", "mirror")
        ]
        if changed or cfg.train.backend != saved.train.backend:
            raise UsageError(
                f"--resume continues {str(folder.path)!r} with its own model and data; these settings differ: "
                f"{', '.join(changed) or 'train.backend'}. Drop them, or start a new run with --out"
            )
    dataset = load_dataset(
        cfg.data, cfg.model.likelihood, registry.likelihood_support(cfg.model.likelihood, cfg.train.backend)
    )
    # Record what "auto" resolved to, so config.toml reproduces the run exactly.
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data,
            binarize=dataset.binarize,
            scale=dataset.transform.get("scale", cfg.data.scale),
            stream=dataset.streaming,
        ),
    )
    if cfg.model.conditional:
        # num_classes = 0 becomes the training labels' count; config.toml records the number,
        # so the run reloads without its data. No labels, or labels out of range: a DataError.
        classes = infer_num_classes(cfg.model.num_classes, dataset.train_labels, dataset.heldout_labels, dataset.name)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))
    if cfg.train.log == "tensorboard":
        require_tensorboard()  # before anything is written
    # A folder this call creates goes again if training fails before writing anything into
    # it (a model too large for memory, a device that will not start).
    created = resume is None and not rank and not folder.path.exists()
    if resume is None and not rank:
        folder.prepare_new(force=force)

    def record_config() -> None:
        # Called by the backend once the model is built and any checkpoint has loaded, so
        # a refused resume (or an unusable device) leaves the run folder untouched.
        if rank:
            return
        folder.write_config(cfg)
        folder.write_data_info(dataset.info())

    say(
        f"training on {dataset.name}: {dataset.train.shape[0]} train / "
        + ("" if dataset.validation is None else f"{dataset.validation.shape[0]} validation / ")
        + f"{dataset.heldout.shape[0]} held-out, "
        f"datapoint shape {tuple(dataset.event_shape)}; run folder {folder.path}"
    )
    started = time.perf_counter()
    on_epoch = None if rank else folder.write_metrics
    board = None
    if cfg.train.log == "tensorboard" and not rank:
        board = TensorBoardLog(folder.path, logged=len(folder.read_metrics()) if resume is not None else 0)

        def on_epoch(records: list[dict]) -> None:
            folder.write_metrics(records)
            board(records)

    try:
        trained, records = backend.fit(
            cfg,
            dataset,
            folder.path,
            resume=resume is not None,
            progress=progress,
            on_start=record_config,
            on_epoch=on_epoch,
            stop_after_steps=stop_after_steps,
        )
    except BaseException:
        if created:
            folder.remove_if_empty()
        raise
    finally:
        if board is not None:
            board.close()
    if rank:  # rank 0 evaluates and reports; this process's Run has no summary
        return Run(folder.path, cfg=cfg, trained=trained, dataset=dataset, data_info=dataset.info())
    folder.write_metrics(records)
    t = cfg.train
    stopped_early = should_stop(records, t.early_stopping_patience, t.early_stopping_min_delta)
    if stop_after_steps is not None and not stopped_early and (not records or records[-1]["epoch"] < t.epochs):
        return Run(folder.path, cfg=cfg, trained=trained, dataset=dataset)
    # With a validation split the reported figures are those of the epoch chosen on it.
    best = best_epoch(records, t.early_stopping_min_delta)
    if best is not None and best != records[-1]["epoch"]:
        run = Run(folder.path, cfg=cfg, dataset=dataset, checkpoint="best")
    else:
        run = Run(folder.path, cfg=cfg, trained=trained, dataset=dataset, checkpoint="last" if best is None else "best")
    note = selection_note(records, t.early_stopping_patience, t.early_stopping_min_delta)
    if note:
        say(note)
    say(
        f"evaluating log p(x) with K = {cfg.train.eval_num_samples} importance samples "
        f"on {dataset.heldout.shape[0]} held-out points"
    )
    evaluation = run.evaluate(num_samples=cfg.train.eval_num_samples)
    summary = {
        "backend": cfg.train.backend,
        "device": trained.device_name,
        "elbo": cfg.train.elbo,
        "epochs": len(records),
        "steps": records[-1]["step"] if records else 0,
        "train_seconds": float(sum(r["seconds"] for r in records)),
        "compile_seconds": float(trained.compile_seconds),
        "wall_seconds_this_session": time.perf_counter() - started,
        "final_epoch": records[-1] if records else None,
        # The weights the evaluation (and every command, by default) used, and their epoch.
        "checkpoint": {"which": run.checkpoint, "epoch": best if best is not None else len(records)},
        "stopped_early": stopped_early,
        "evaluation": evaluation,
        "data": dataset.name,
        "versions": _versions(backend),
    }
    collapsed = collapse_warning(records)
    if collapsed:
        summary["warnings"] = [collapsed]
        say(f"warning: {collapsed}")
    folder.write_summary(summary)
    run.summary = summary
    if pictures:
        from ppvae.plotting.run_pictures import write_run_pictures

        write_run_pictures(run, records)
    return run
