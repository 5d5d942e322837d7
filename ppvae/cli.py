"""The ``ppvae`` command line: click commands that parse, call the API and print.

User errors become one line on stderr and a non-zero exit code (2 for usage errors),
never a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import sys
import zipfile
from pathlib import Path

import click
import numpy as np

from ppvae.spec.config import BETA_SCHEDULES, parse_override, validate_device
from ppvae.inference.estimators import estimator_names, importance_weighted_names
from ppvae.inference.estimators import help_text as estimators_help
from ppvae.errors import PPVAEError, UsageError
from ppvae.runs.atomic import atomic_path

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _handle_errors(fn):
    """Turn ppvae's errors into a clean message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PPVAEError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def with_plugins(fn):
    """Give a command ``--plugin FILE`` (repeatable): plug-in files loaded before it runs.

    Put it directly above ``@_handle_errors``. A command whose function takes a
    ``plugins`` parameter receives the files' absolute paths (``ppvae fit`` records them
    in the run's config.toml); others only need the components registered.
    """
    wants_paths = "plugins" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args, plugin_files=(), **kwargs):
        from ppvae.spec.plugins import load_plugins

        paths = load_plugins(plugin_files)
        if wants_paths:
            kwargs["plugins"] = paths
        return fn(*args, **kwargs)

    return click.option("--plugin", "plugin_files", multiple=True, metavar="FILE", type=click.Path(path_type=Path),
                        help="A .py plug-in file that registers custom components (ppvae.register); "
                             "loaded first. Repeatable.")(_handle_errors(wrapper))


def _write_array(path: Path, array: np.ndarray, force: bool, *, is_image: bool = True,
                 title: str | None = None, ncols: int | None = None) -> None:
    """Save as .npy or a picture (.png), atomically, refusing to overwrite unless forced."""
    if path.exists() and not force:
        raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it or choose another --out")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    elif suffix == ".png":
        from ppvae.plotting.run_pictures import save_array_picture

        save_array_picture(array, path, is_image=is_image, title=title, ncols=ncols)
    else:
        raise UsageError(f"--out {str(path)!r}: use a .png (picture) or .npy (array) file name")


def _run_labels(r, labels, data) -> np.ndarray | None:
    """The data's labels where the run is conditional (they are fed to the networks), else None."""
    if not r.num_classes:
        return None
    if labels is None:
        from ppvae.errors import DataError

        raise DataError(f"{r.path} is a conditional VAE: it needs the class label of every point, but "
                        f"{data or 'its held-out split'} has none; use data with labels (an .npz with 'y')")
    return labels


def _check_label_option(r, label) -> None:
    if label is not None and not r.num_classes:
        raise UsageError(f"--label: {r.path} is not a conditional run (model.conditional = false); drop --label")


def _check_out(path: Path, force: bool, suffixes: tuple[str, ...]) -> None:
    """Reject a bad --out before any work is done (the writers check again)."""
    if path.suffix.lower() not in suffixes:
        names = " or ".join(suffixes)
        raise UsageError(f"--out {str(path)!r}: use a {names} file name")
    if path.exists() and not force:
        raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it or choose another --out")


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="ppvae")
def cli():
    """ppvae: variational autoencoders as Pyro model/guide pairs.

    \b
    Start here:
      ppvae fit                          train on the embedded MNIST digits (no network)
      ppvae evaluate runs/RUN            held-out ELBO, log p(x), active units
      ppvae sample runs/RUN -n 64 --out samples.png
      ppvae encode runs/RUN --out latents.npz
      ppvae plot latent runs/RUN --out latent.png
      ppvae score runs/RUN --anomalous 9 --out scores.csv
      ppvae models                       ready-made specs in models/ and every component

    Every command has --help with examples.
    """


# ---------------------------------------------------------------------------------------- fit
def _ask_for_host_devices(num_devices: int, environ=None, modules=None) -> bool:
    """Ask XLA for ``num_devices`` CPU devices (``--num-devices``): add the flag to XLA_FLAGS.

    Only where JAX is not imported yet (it reads XLA_FLAGS once, at import) and XLA_FLAGS
    does not set the count already; it adds host (CPU) devices only, so GPUs are unaffected.
    Returns whether it changed the environment.
    """
    import os

    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    flag = "--xla_force_host_platform_device_count"
    flags = environ.get("XLA_FLAGS", "")
    if num_devices <= 1 or flag in flags or "jax" in modules:
        return False
    environ["XLA_FLAGS"] = f"{flags} {flag}={num_devices}".strip()
    return True


def _fit_on_processes(num_processes, spec, resume, out, overrides, plugins, shortcuts) -> None:
    """``ppvae fit --num-processes N`` (N != 1): check, then run this same command on N workers."""
    from ppvae import api
    from ppvae.spec.registry import load_backend
    from ppvae.runs.folder import RunFolder, default_run_dir

    if num_processes < 1:
        raise UsageError(f"--num-processes must be at least 1, got {num_processes}")
    if resume is not None:
        folder = RunFolder(resume)
        folder.check_exists()
        base = folder.read_config()
    else:
        base = spec
    # The config is checked here once, so a bad setting is one line before any worker starts.
    cfg = api.build_config(base, overrides, plugins=plugins, **shortcuts)
    load_backend("pyro")  # an install hint, not a traceback, where torch is missing
    from ppvae.backends.pyro.launch import check_processes, launch_fit

    check_processes(num_processes, cfg.train.backend, cfg.train.device)
    ctx = click.get_current_context()
    args = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "num_processes" or value is None or value is False or value == ():
            continue
        if isinstance(param, click.Argument):
            args.append(str(value))
            continue
        opt = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            args.append(opt)
        else:
            for item in (value if param.multiple else [value]):
                args += [opt, str(item)]
    run_dir = resume if resume is not None else out
    if run_dir is None:
        # Chosen once here: every worker must name the same folder.
        run_dir = default_run_dir()
        args += ["--out", str(run_dir)]
    code = launch_fit(args, num_processes, run_dir)
    if code:
        sys.exit(code)


@cli.command(context_settings=CONTEXT)
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", help="embedded (default), mnist, fashion-mnist, a folder of MNIST-format files, "
              "or a .npy/.npz/.csv file.")
@click.option("--backend", help="Inference backend (default pyro).")
@click.option("--prior", help="Prior p(z) by registered name (default normal).")
@click.option("--likelihood", help="Likelihood p(x|z): bernoulli, continuous_bernoulli, normal, ...")
@click.option("--encoder", help="Encoder network: mlp or conv.")
@click.option("--decoder", help="Decoder network: mlp, conv or linear.")
@click.option("--guide", help="Family of q(z|x): diagonal (default), lowrank, fullrank or iaf; "
              "settings with --set model.guide_options.rank=4.")
@click.option("--latent-dim", type=int, help="Size of z (default 20).")
@click.option("--epochs", type=int, help="Passes over the training split (default 30).")
@click.option("--batch-size", type=int, help="Minibatch size (default 128); per process with --num-processes, "
              "global (split over the devices) with --num-devices.")
@click.option("--beta", type=float, help="KL weight β > 0 (default 1: the plain ELBO).")
@click.option("--beta-schedule", type=click.Choice(BETA_SCHEDULES), help="constant, linear warm-up or cyclical.")
@click.option("--lr", type=float, help="Adam learning rate (default 1e-3).")
@click.option("--elbo", type=click.Choice(estimator_names()), help=estimators_help())
@click.option("--num-particles", type=int, help="Samples of z per datapoint (K for iwae and dreg).")
@click.option("--seed", type=int, help="Seed of every random draw in training (default 0).")
@click.option("--device", help="auto (default), cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to write (default runs/run-<timestamp>).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any spec setting, e.g. --set model.encoder_options.hidden=[512,256] "
                   "--set model.likelihood_options.scale_mode=per_dim. Repeatable.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this folder from its last checkpoint.")
@click.option("--force", is_flag=True, help="Overwrite the files of an existing run folder given by --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--num-processes", type=int, metavar="N",
              help="Data-parallel training on N local processes (pyro backend; the same as torchrun "
                   "--nproc-per-node N -m ppvae fit ...). Each process takes --batch-size points per step, "
                   "so a step sees N times as many; gradients are averaged. CPU: gloo; CUDA: one GPU each.")
@click.option("--num-devices", type=int, metavar="N",
              help="Data-parallel training on N JAX devices in this process (numpyro backend; train.num_devices): "
                   "--batch-size is the global batch, split evenly over the devices. On CPU, JAX needs "
                   "XLA_FLAGS=--xla_force_host_platform_device_count=N before it starts; ppvae fit sets it "
                   "itself unless JAX is already loaded (a --plugin that imports it) or XLA_FLAGS sets it.")
@with_plugins
@_handle_errors
def fit(spec, data, backend, prior, likelihood, encoder, decoder, guide, latent_dim, epochs, batch_size, beta,
        beta_schedule, lr, elbo, num_particles, seed, device, out, settings, resume, force, quiet,
        num_processes=None, num_devices=None, plugins=()):
    """Train a VAE and write a run folder.

    SPEC is an optional TOML file with [model], [data] and [train] tables (see models/);
    a run's own RUN/config.toml reproduces that run. Options override the spec, and
    --set overrides anything. Without arguments, ppvae trains the mlp-400 VAE (Z = 20,
    Bernoulli likelihood) on 10,000 MNIST digits that ship with ppvae.

    \b
    The run folder holds config.toml, metrics.jsonl (one record per epoch), the
    checkpoint, summary.json and samples.png, reconstructions.png and loss.png.
    Ctrl-C saves a checkpoint; --resume RUN continues it.

    \b
    Examples:
      ppvae fit
      ppvae fit --latent-dim 2 --epochs 20 --out runs/z2
      ppvae fit --encoder conv --decoder conv --latent-dim 2 --out runs/conv
      ppvae fit --likelihood normal --decoder linear --data table.csv \\
                --set data.standardize=true --set data.binarize=none
      ppvae fit --beta 4 --beta-schedule linear --set train.warmup_steps=2000
      ppvae fit --set model.conditional=true --latent-dim 2 --out runs/cvae   # labels to both networks
      ppvae fit --guide lowrank --set model.guide_options.rank=4
      ppvae fit models/beta-vae.toml --out runs/beta      # ready-made specs: ppvae models
      ppvae fit --plugin my_prior.py --prior my_prior --out runs/mine
      ppvae fit runs/z2/config.toml --out runs/z2-again
      ppvae fit --resume runs/z2 --epochs 40
      ppvae fit --num-processes 2 --out runs/ddp          # 2 processes, batch 128 each
      ppvae fit --backend numpyro --num-devices 2         # 2 JAX devices, 64 of the 128 each
    """
    from ppvae import api

    if resume is not None and (spec is not None or out is not None):
        raise UsageError("--resume RUN continues RUN with its own config.toml; drop SPEC and --out")
    overrides = dict(parse_override(s) for s in settings)
    shortcuts = dict(data=data, backend=backend, prior=prior, likelihood=likelihood, encoder=encoder,
                     decoder=decoder, guide=guide, latent_dim=latent_dim, epochs=epochs, batch_size=batch_size,
                     beta=beta, beta_schedule=beta_schedule, lr=lr, elbo=elbo, num_particles=num_particles,
                     seed=seed, device=device, num_devices=num_devices)
    if num_devices is not None:
        _ask_for_host_devices(num_devices)
    if num_processes is not None and num_processes != 1:  # one process: this one
        _fit_on_processes(num_processes, spec, resume, out, overrides, plugins, shortcuts)
        return
    echo = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    run = api.fit(spec, out=out, resume=resume, force=force, progress=not quiet, overrides=overrides,
                  echo=echo, plugins=plugins, **shortcuts)
    if run.summary is None:  # a process other than rank 0 of a multi-process job: rank 0 reports
        return
    ev = run.summary["evaluation"]
    last = run.summary["final_epoch"] or {}
    click.echo(f"run folder: {run.path}")
    click.echo(f"epochs {run.summary['epochs']}, {run.summary['train_seconds']:.1f} s of training, "
               f"{_fmt(last.get('images_per_s'), 0)} images/s")
    click.echo(f"held-out ELBO:   {_fmt(ev['heldout_elbo'])} nats per datapoint "
               f"(reconstruction {_fmt(ev['reconstruction'])}, KL {_fmt(ev['kl'])})")
    click.echo(f"held-out log p(x) >= {_fmt(ev['heldout_log_px'])} ± {_fmt(ev['heldout_log_px_stderr'])} "
               f"(IWAE bound, K = {ev['num_samples']})")
    if "exact_log_px" in ev:
        click.echo(f"exact log p(x):  {_fmt(ev['exact_log_px'])} (linear-Gaussian model)")
    click.echo(f"active units: {ev['active_units']} of {run.config.model.latent_dim}")
    click.echo(f"pictures: {run.path / 'samples.png'}, {run.path / 'reconstructions.png'}, {run.path / 'loss.png'}")


# ----------------------------------------------------------------------------------- evaluate
@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Evaluate on this source instead of the run's held-out split "
              "(a file is prepared like the training data).")
@click.option("--num-samples", "-k", type=int, default=1000, show_default=True,
              help="K of the importance-weighted log p(x) bound (chunked: memory stays bounded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the importance samples.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@with_plugins
@_handle_errors
def evaluate(run, data, num_samples, seed, device, as_json):
    """Held-out ELBO, reconstruction, KL, log p(x) and active units of a run.

    log p(x) is the importance-weighted (IWAE) bound with K samples from q(z|x): a lower
    bound that tightens as K grows. All numbers are nats per datapoint.

    \b
    Examples:
      ppvae evaluate runs/z2
      ppvae evaluate runs/z2 -k 5000 --json
      ppvae evaluate runs/z2 --data my_digits.npy

    A conditional run is evaluated with the data's labels: log p(x|y).
    """
    validate_device(device)
    from ppvae import api

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    _run_labels(r, labels, data)
    # None: the run's own held-out split, which the linear probe names as such.
    ev = r.evaluate(None if data is None else x, num_samples=num_samples, seed=seed, labels=labels)
    if as_json:
        # NaN is not JSON: a metric that could not be computed is printed as null.
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in ev.items()}
        click.echo(json.dumps(clean, indent=2, sort_keys=True))
        return
    click.echo(f"{r.path}: {ev['num_points']} points")
    click.echo(f"  held-out ELBO        {_fmt(ev['heldout_elbo'])}")
    click.echo(f"  reconstruction       {_fmt(ev['reconstruction'])}")
    click.echo(f"  KL                   {_fmt(ev['kl'])}")
    click.echo(f"  log p(x) (K={ev['num_samples']}) >= {_fmt(ev['heldout_log_px'])} ± {_fmt(ev['heldout_log_px_stderr'])}")
    if "exact_log_px" in ev:
        click.echo(f"  exact log p(x)       {_fmt(ev['exact_log_px'])}")
    if "bits_per_dim" in ev:
        click.echo(f"  bits per dimension   {_fmt(ev['bits_per_dim'], 4)}")
    click.echo(f"  active units         {ev['active_units']} of {len(ev['kl_per_dim'])}")
    if "linear_probe_accuracy" in ev:
        probe = ev["linear_probe"]
        click.echo(f"  linear probe         {ev['linear_probe_accuracy']:.1%} accuracy (logistic regression on the "
                   f"latent means; trained on the {probe['trained_on']}; scored on the {probe['scored_on']})")


# ----------------------------------------------------------------------------------- generation
@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-n", "--num", type=int, default=64, show_default=True, help="How many samples.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="samples.png (a picture) or samples.npy (the array).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label", type=int, default=None,
              help="Conditional runs: the class of every sample. Without it, a conditional run gives "
                   "one row per class (N / classes samples each, rounded up).")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def sample(run, num, out, seed, label, device, force):
    """Generate new data: decode z drawn from the prior.

    \b
    Examples:
      ppvae sample runs/z2 -n 100 --out samples.png
      ppvae sample runs/z2 -n 1000 --out samples.npy --seed 1
      ppvae sample runs/cvae --label 3 -n 64 --out threes.png      # a conditional run
      ppvae sample runs/cvae -n 80 --out by_class.png              # one row per class
    """
    validate_device(device)
    _check_out(out, force, (".png", ".npy"))
    from ppvae import api

    r = api.load(run, device=device)
    _check_label_option(r, label)
    ncols = None
    if r.num_classes and label is None:
        from ppvae.plotting.run_pictures import samples_by_class

        ncols = math.ceil(num / r.num_classes)
        x = samples_by_class(r, ncols, seed=seed)
        title = f"{ncols} samples per class, one row per class 0 .. {r.num_classes - 1}"
    else:
        x = r.sample(num, seed=seed, labels=label)
        title = f"{num} samples" + (f" of class {label}" if label is not None else "")
    _write_array(out, x, force, is_image=r.data_info["is_image"], title=title, ncols=ncols)
    click.echo(f"wrote {len(x)} samples to {out}")


@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Source to reconstruct (default: the run's held-out split).")
@click.option("-n", "--num", type=int, default=None, help="Only the first N points.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="recon.png (data beside reconstructions) or recon.npy (the reconstructions).")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def reconstruct(run, data, num, out, device, force):
    """Compress and recover: encode data to z (posterior mean) and decode it.

    \b
    Examples:
      ppvae reconstruct runs/z2 -n 16 --out recon.png
      ppvae reconstruct runs/z2 --data digits.npy --out recon.npy

    A conditional run is given the data's labels.
    """
    validate_device(device)
    _check_out(out, force, (".png", ".npy"))
    from ppvae import api
    from ppvae.plotting.images import reconstruction_grid

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    labels = _run_labels(r, labels, data)
    if num is not None:
        if num <= 0:
            raise UsageError(f"-n must be positive, got {num}")
        x = x[:num]
        labels = None if labels is None else labels[:num]
    recon = r.reconstruct(x, labels)
    if out.suffix.lower() == ".png" and r.data_info["is_image"]:
        if out.exists() and not force:
            raise UsageError(f"{str(out)!r} already exists; pass --force to overwrite it or choose another --out")
        reconstruction_grid(x[:32], recon[:32], out, title="data and reconstructions")
    else:
        _write_array(out, recon, force, is_image=r.data_info["is_image"])
    click.echo(f"wrote {len(recon)} reconstructions to {out}")


@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Source to encode (default: the run's held-out split).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="latents.npz (arrays loc, scale and labels if any) or latents.npy "
                   "(shape (n, 2, latent_dim): loc then scale).")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def encode(run, data, out, device, force):
    """Encode data to the posterior q(z|x): its loc and scale per point.

    The loc is the compressed code; `ppvae decode` turns it back into data.

    \b
    Examples:
      ppvae encode runs/z2 --out latents.npz
      ppvae encode runs/z2 --data digits.npy --out latents.npy

    A conditional run encodes with the data's labels (q(z|x,y)); the .npz keeps them, so
    `ppvae decode` uses them again.
    """
    validate_device(device)
    _check_out(out, force, (".npz", ".npy"))
    from ppvae import api

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    loc, scale = r.encode(x, _run_labels(r, labels, data))
    if out.exists() and not force:
        raise UsageError(f"{str(out)!r} already exists; pass --force to overwrite it or choose another --out")
    if out.suffix.lower() == ".npz":
        arrays = {"loc": loc, "scale": scale, **({"labels": labels} if labels is not None else {})}
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    elif out.suffix.lower() == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.stack([loc, scale], axis=1))
    else:
        raise UsageError(f"--out {str(out)!r}: use a .npz or .npy file name")
    click.echo(f"wrote loc and scale of {len(loc)} points ({loc.shape[1]} latent dimensions) to {out}")


def _read_latents(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"latents file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "loc" not in f:
                    raise UsageError(f"{str(path)!r} has no array 'loc' (found: {', '.join(f.files)})")
                return f["loc"]
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot read latents from {str(path)!r} ({reason}); give the .npz or .npy "
                         "that `ppvae encode` wrote, or an (n, latent_dim) array saved with numpy.save") from None
    # (n, 2, Z) as written by `ppvae encode --out X.npy`: take the loc.
    return z[:, 0] if z.ndim == 3 and z.shape[1] == 2 else z


def _latent_labels(path: Path) -> np.ndarray | None:
    """The ``labels`` array of an .npz written by `ppvae encode`, or None."""
    if path.suffix.lower() != ".npz":
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["labels"] if "labels" in f.files else None


@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--latents", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="(n, latent_dim) .npy, or the output of `ppvae encode` (.npz or .npy).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="decoded.png or decoded.npy.")
@click.option("--label", type=int, default=None,
              help="Conditional runs: decode every latent as this class (default: the labels stored "
                   "in the .npz that `ppvae encode` wrote).")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def decode(run, latents, out, label, device, force):
    """Decode latents into data: the mean of p(x|z) (p(x|z,y) for a conditional run).

    \b
    Examples:
      ppvae encode runs/z2 --out codes.npz && ppvae decode runs/z2 --latents codes.npz --out recovered.png
      python -c "import numpy as np; np.save('grid.npy', np.mgrid[-2:2:8j, -2:2:8j].reshape(2, -1).T)"
      ppvae decode runs/z2 --latents grid.npy --out manifold.png
      ppvae decode runs/cvae --latents grid.npy --label 3 --out threes.png   # a conditional run
    """
    validate_device(device)
    _check_out(out, force, (".png", ".npy"))
    from ppvae import api

    r = api.load(run, device=device)
    _check_label_option(r, label)
    z = _read_latents(latents)
    labels = label
    if r.num_classes and label is None:
        labels = _latent_labels(latents)
        if labels is None:
            raise UsageError(f"{r.path} is a conditional VAE: give the class with --label (0 .. "
                             f"{r.num_classes - 1}), or latents in an .npz with 'labels' (as `ppvae encode` writes)")
    x = r.decode(z, labels)
    _write_array(out, x, force, is_image=r.data_info["is_image"], title=f"decoded from {latents.name}")
    click.echo(f"wrote {len(x)} decoded points to {out}")


# ------------------------------------------------------------------------------------ compare
@cli.command(context_settings=CONTEXT)
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backends", default="pyro", show_default=True, metavar="NAMES",
              help="Comma-separated inference backends: pyro, numpyro.")
@click.option("--elbos", default="meanfield", show_default=True, metavar="NAMES",
              help=f"Comma-separated training estimators: {', '.join(estimator_names())} "
                   f"({' and '.join(importance_weighted_names())} use the spec's train.num_particles as K, "
                   "or 5 when that is 1).")
@click.option("--seeds", default="0", show_default=True, metavar="SEEDS",
              help="Comma-separated training seeds; each row is mean ± spread over them.")
@click.option("--epochs", type=int, help="Epochs of every run (default: the spec's).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: the spec's).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder for the run folders and results (default runs/compare-<timestamp>).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any spec setting, as for ppvae fit. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print comparison.json instead of the table.")
@click.option("--pictures", is_flag=True, help="Also write each run's samples, reconstructions and loss plots.")
@click.option("--force", is_flag=True, help="Overwrite the runs and results in an existing --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages or bars.")
@with_plugins
@_handle_errors
def compare(spec, backends, elbos, seeds, epochs, device, out, settings, as_json, pictures, force, quiet,
            plugins=()):
    """Train one spec with several backends and estimators, and compare them.

    Every combination of backend, estimator and seed is trained on the same data split
    into OUT/<backend>-<estimator>-seed<k>/. One row per backend and estimator gives
    device, epochs, wall time, seconds per epoch, images per second, held-out ELBO,
    held-out log p(x) (IWAE bound with K = train.eval_num_samples), KL and active units,
    each as mean ± spread (sample standard deviation) over the seeds. A held-out ELBO or
    log p(x) that differs from the best row's by more than the two rows' spreads together
    is marked with *.

    \b
    OUT also gets comparison.json (per-seed raw numbers, protocol and machine facts),
    comparison.md (the table and its footnotes) and comparison.png (held-out ELBO
    against training time, one line per row). Names, the spec and the data are checked
    before anything is trained.

    \b
    Examples:
      ppvae compare --elbos meanfield,trace,iwae --seeds 0,1,2 --epochs 10
      ppvae compare models/mlp-400.toml --backends pyro,numpyro --seeds 0,1,2 --out runs/backends
      ppvae compare --elbos meanfield,iwae --set train.num_particles=10 --set model.latent_dim=2 --json
      ppvae compare --backends pyro,numpyro --device cuda --epochs 5 -q
    """
    from ppvae.analysis import compare as comparing
    from ppvae.errors import TrainingError

    if device is not None:
        validate_device(device)
    overrides = dict(parse_override(s) for s in settings)
    echo = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    if plugins:
        # The runs record the plug-ins through the spec they train.
        from ppvae import api

        spec = api.build_config(spec, plugins=plugins)
    result = comparing.compare(spec, backends=backends, elbos=elbos, seeds=seeds, epochs=epochs, device=device,
                               out=out, overrides=overrides, force=force, pictures=pictures,
                               progress=not quiet, echo=echo)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(result.to_markdown(), nl=False)
        files = ", ".join(str(p) for p in (result.markdown_path, result.json_path, result.plot_path) if p.exists())
        click.echo(f"\nrun folders in {result.out}; results: {files}")
    failed = result.failed_runs
    if failed:
        total = sum(len(row["runs"]) for row in result.rows)
        raise TrainingError(f"{len(failed)} of {total} runs stopped with an error "
                            f"({', '.join(Path(f).name for f in failed)}) and are left out of the table; "
                            f"their messages are in {result.json_path}")


# ----------------------------------------------------------------------------------- diagnose
@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Diagnose points of this source (default: the run's held-out split).")
@click.option("--num-points", "-n", type=int, default=100, show_default=True, help="Points evaluated.")
@click.option("--num-draws", "-s", type=int, default=1000, show_default=True,
              help="Draws from q(z|x) per point (PSIS needs a few hundred).")
@click.option("--reference", type=click.Choice(["nuts"]), default=None,
              help="Also compute a reference posterior by NUTS (NumPyro, 4 chains) for --reference-points points.")
@click.option("--reference-points", type=int, default=5, show_default=True)
@click.option("--gap-points", type=int, default=20, show_default=True,
              help="Points for the amortization/approximation gaps (0 skips them).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md, pictures, inference_data.nc and diagnostics.json (default RUN/diagnostics).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages.")
@with_plugins
@_handle_errors
def diagnose(run, data, num_points, num_draws, reference, reference_points, gap_points, out, seed, device,
             as_json, quiet):
    """How good is the encoder's q(z|x)? PSIS k-hat, gaps, collapse, NUTS.

    \b
    For N points of the run's held-out split:
      - PSIS Pareto k-hat of p(x,z)/q(z|x) per point (> 0.7: q is an unreliable proposal),
        with the worst inputs beside their reconstructions;
      - posterior collapse: KL per latent dimension and active units;
      - the approximation and amortization gaps (Cremer et al. 2018), by fitting a q to
        each point alone (needs the numpyro extra);
      - with --reference nuts, a NUTS reference posterior with R-hat and ESS, and q's
        errors against it.
    Writes report.md (tables, pictures, and what they mean), inference_data.nc (ArviZ),
    diagnostics.json and the pictures.

    \b
    Examples:
      ppvae diagnose runs/first
      ppvae diagnose runs/first -n 200 --reference nuts --out runs/first/diag
      ppvae diagnose runs/first --json -q
    """
    validate_device(device)
    from ppvae import api
    from ppvae.analysis.diagnostics import diagnose as run_diagnose

    r = api.load(run, device=device)
    if r.num_classes:
        raise UsageError(f"ppvae diagnose does not handle conditional runs yet ({r.path} has model.conditional = "
                         "true): its checks use q(z|x) without labels; ppvae evaluate gives log p(x|y)")
    echo = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    result = run_diagnose(r, data=data, num_points=num_points, num_draws=num_draws, reference=reference,
                          reference_points=reference_points, gap_points=gap_points, out=out, seed=seed,
                          echo=echo, progress=not quiet)
    if as_json:
        click.echo(json.dumps(result.numbers, indent=2, sort_keys=True, default=str))
        return
    p = result.numbers["psis"]
    click.echo(f"k-hat > 0.7 for {p['share_above_0.7']:.0%} of {result.numbers['num_points']} points "
               f"(median {p['median']:.2f}); active units {result.numbers['collapse']['active_units']} of "
               f"{result.numbers['collapse']['latent_dim']}")
    if "gaps" in result.numbers:
        g = result.numbers["gaps"]
        click.echo(f"approximation gap {np.mean(g['approximation_gap']):.2f}, amortization gap "
                   f"{np.mean(g['amortization_gap']):.2f} nats (mean over {len(g['approximation_gap'])} points)")
    if "reference" in result.numbers:
        ref = result.numbers["reference"]
        click.echo(f"NUTS reference: max R-hat {ref['max_rhat']:.3f}, min bulk ESS {ref['min_ess_bulk']:.0f}")
    click.echo(f"report: {result.out / 'report.md'}")


# ------------------------------------------------------------------------------------- models
@cli.command(context_settings=CONTEXT)
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              help="Folder of *.toml specs to list (default: models/ of the ppvae checkout, else ./models).")
@click.option("--json", "as_json", is_flag=True, help="Print the specs and components as JSON.")
@with_plugins
@_handle_errors
def models(directory, as_json):
    """List the ready-made specs and every registered component.

    \b
    Specs: each *.toml in models/ (or --dir) with the first comment line of the file;
    train one with `ppvae fit models/NAME.toml`, and read the comments at the top of the
    file for what it is and what to expect. A spec that needs a plug-in names it.
    Components: every prior, likelihood, encoder and decoder per kind, the backends that
    have it ("both" marks a ppvae.Portable, written once for every backend) and one line
    about it. Components of plug-ins are listed once the plug-in is loaded (--plugin).

    \b
    Examples:
      ppvae models
      ppvae models --plugin models/plugins/student_t_prior.py
      ppvae models --dir my_specs --json
      ppvae fit models/beta-vae.toml --out runs/beta
    """
    from ppvae.spec import catalog

    specs = catalog.list_specs(directory)
    listing = catalog.list_components()
    from ppvae.spec.plugins import loaded_plugins

    if as_json:
        base = directory if directory is not None else catalog.default_models_dir()
        click.echo(json.dumps({"models_dir": None if base is None else str(base), "specs": specs,
                               "components": listing["components"], "unavailable_backends": listing["unavailable"],
                               "plugins": sorted(loaded_plugins())}, indent=2))
        return
    base = directory if directory is not None else catalog.default_models_dir()
    if base is None:
        click.echo("Specs: no models/ folder here (an installed ppvae ships none); point --dir at one.")
    else:
        shown = Path(base).resolve()
        if shown.is_relative_to(Path.cwd()):
            shown = shown.relative_to(Path.cwd())
        click.echo(f"Specs in {shown} (train one with: ppvae fit {shown / 'NAME.toml'}):")
        width = max([len(s["name"]) for s in specs] + [8])
        for s in specs:
            extra = f" [plug-in: {', '.join(s['plugins'])}]" if s.get("plugins") else ""
            click.echo(f"  {s['name']:<{width}}  {s['description']}{extra}")
        if not specs:
            click.echo("  (none)")
    click.echo("")
    click.echo("Components (backends that have each; both = a ppvae.Portable, written once):")
    rows = [r for kind_rows in listing["components"].values() for r in kind_rows]
    width = max([len(r["name"]) for r in rows] + [8])
    for kind, kind_rows in listing["components"].items():
        click.echo(f"  {kind}")
        for r in kind_rows:
            where = "both" if r["portable"] else ", ".join(r["backends"])
            click.echo(f"    {r['name']:<{width}}  {where:<13}  {r['description']}")
        if not kind_rows:
            click.echo("    (none registered)")
    for backend, reason in listing["unavailable"].items():
        click.echo(f"  ({backend} not installed: {reason})")


# ------------------------------------------------------------------------------- applications
def _parse_classes(text: str | None) -> list[int] | None:
    """``--anomalous 9`` or ``--anomalous 8,9`` -> [9] or [8, 9]."""
    if text is None:
        return None
    try:
        classes = [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        classes = []
    if not classes:
        raise UsageError(f"--anomalous {text!r}: give the integer label(s) of the anomalous class, "
                         "e.g. --anomalous 9 or --anomalous 8,9")
    return classes


@cli.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Points to score (default: the run's held-out split); a file is prepared like "
              "the training data.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path),
              help="One integer label per point (.npy, .npz, .csv or .txt); default: the data's own labels.")
@click.option("--anomalous", metavar="CLASSES",
              help="Label(s) that count as anomalies, comma-separated (9, or 8,9); 0/1 labels need none.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="scores.csv, one row per point; with anomalous and normal points also scores.png beside it.")
@click.option("--num-samples", "-k", type=int, default=1000, show_default=True,
              help="Draws from q(z|x) per point (K of the IWAE bound on log p(x)).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--latent-density", is_flag=True,
              help="Also score by density in latent space: -log of a Gaussian mixture fit to the training "
                   "split's posterior means, evaluated at each point's posterior mean.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (means, ROC AUCs, files) as JSON.")
@click.option("--force", is_flag=True, help="Overwrite --out (and its picture) if they exist.")
@with_plugins
@_handle_errors
def score(run, data, labels_file, anomalous, out, num_samples, seed, device, latent_density, as_json, force):
    """Anomaly scores per datapoint: -ELBO and -log p(x) (higher = more unusual).

    Both come from the same K draws z ~ q(z|x) per point: -ELBO is minus their mean log
    weight, -log p(x) the importance-weighted (IWAE) estimate, which is never above it.

    \b
    OUT gets one row per point: index, label (if known), anomalous (0/1, if known),
    neg_elbo and neg_log_px (nats), and neg_log_latent_density with --latent-density.
    Likelihoods also track how simple an input is: an unseen class of simple shapes can
    score as normal. --latent-density asks instead whether the encoder puts the point
    where it puts normal (training) data, which often separates such classes better.

    \b
    With labels and --anomalous (or labels that are already 0/1), also the ROC AUC of
    each score (1 = every anomaly ranked above every normal point, 0.5 = chance) and a
    picture beside OUT: the scores' histograms by class and the ROC curves.

    \b
    Examples:
      ppvae score runs/digits0-8 --data test.npz --anomalous 9 --latent-density --out scores.csv
      ppvae score runs/z2 --out heldout_scores.csv -k 200
      ppvae score runs/z2 --data new.npy --labels is_fraud.npy --out fraud.csv --json
    """
    validate_device(device)
    _check_out(out, force, (".csv",))
    classes = _parse_classes(anomalous)
    from ppvae import api
    from ppvae.analysis.scoring import SCORES, read_labels, score_data

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    if labels_file is not None:
        labels = read_labels(labels_file, len(x))
    report = score_data(r, x, labels=labels, anomalous=classes, out=out, force=force, num_samples=num_samples,
                        seed=seed, latent_density=latent_density)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    d = report.to_dict()
    click.echo(f"scored {d['num_points']} points (K = {num_samples} draws each): mean -ELBO "
               f"{_fmt(d['mean_neg_elbo'])}, mean -log p(x) {_fmt(d['mean_neg_log_px'])} nats; wrote {out}")
    if report.roc_auc:
        aucs = ", ".join(f"{SCORES[k]} {v:.3f}" for k, v in report.roc_auc.items())
        click.echo(f"ROC AUC, {d['num_anomalous']} anomalous vs {d['num_normal']} normal points: {aucs}")
        click.echo(f"picture: {report.picture}")
    elif labels is not None:
        click.echo("no ROC AUC: the labels are not 0/1; pass --anomalous with the anomalous label(s), e.g. "
                   "--anomalous 9")


@cli.group(context_settings=CONTEXT)
def plot():
    """Pictures of a run's latent space: the map of the data's codes, and interpolations.

    \b
    Examples:
      ppvae plot latent runs/z2 --out latent.png
      ppvae plot interpolate runs/z2 --between 0 1 --steps 12 --out line.png
    """


@plot.command("latent", context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", help="Points to map (default: the run's held-out split).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A .png file.")
@click.option("--grid-size", type=int, default=15, show_default=True,
              help="Values per axis of the decoded manifold grid (2-D latents).")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def plot_latent(run, data, out, grid_size, device, force):
    """The latent map: posterior means of the data, coloured by label.

    A 2-D latent is drawn as it is, beside the decoded manifold: the means of p(x|z) on a
    grid of z at standard Normal quantiles (5% to 95%), tiled. A larger latent is
    projected to its first two principal components (the axis labels say which).

    \b
    Examples:
      ppvae plot latent runs/z2 --out latent.png
      ppvae plot latent runs/first --data digits.npz --out latent_pca.png
    """
    validate_device(device)
    _check_out(out, force, (".png",))
    from ppvae import api
    from ppvae.plotting.latents import plot_latent as draw

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    draw(r, x, out, labels=labels, grid_size=grid_size, source=data or "held-out split")
    click.echo(f"wrote the latent map of {len(x)} points to {out}")


@plot.command("interpolate", context_settings=CONTEXT)
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--between", nargs=2, type=int, required=True, metavar="I J",
              help="Indices of the two datapoints (0-based) in the data.")
@click.option("--steps", type=int, default=10, show_default=True, help="Decoded points along the line, ends included.")
@click.option("--data", help="Where the two points come from (default: the run's held-out split).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A .png file.")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@with_plugins
@_handle_errors
def plot_interpolate(run, between, steps, data, out, device, force):
    """Decode the straight line between the latent means of two datapoints.

    The strip shows datapoint I, the decoded means of p(x|z) for z moving in equal steps
    from I's posterior mean to J's, and datapoint J.

    \b
    Examples:
      ppvae plot interpolate runs/z2 --between 0 1 --out line.png
      ppvae plot interpolate runs/z2 --between 3 42 --steps 16 --data digits.npz --out line.png
    """
    validate_device(device)
    _check_out(out, force, (".png",))
    from ppvae import api
    from ppvae.plotting.latents import plot_interpolation

    r = api.load(run, device=device)
    x, labels = r.load_data(data)
    i, j = between
    plot_interpolation(r, x, i, j, out, steps=steps, labels=labels, source=data or "held-out split")
    click.echo(f"wrote the interpolation between points {i} and {j} ({steps} steps) to {out}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ppvae")


if __name__ == "__main__":  # pragma: no cover
    main()
