"""``ppvae fit``: train a VAE and write a run folder (also on several processes or JAX devices)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ppvae.cli.options import (
    CONTEXT,
    data_option,
    device_option,
    force_option,
    out_option,
    progress_echo,
    quiet_option,
    seed_option,
    set_option,
    with_plugins,
)
from ppvae.cli.outputs import fmt
from ppvae.errors import UsageError
from ppvae.inference.estimators import estimator_names
from ppvae.inference.estimators import help_text as estimators_help
from ppvae.spec.config import BETA_SCHEDULES, LOG_TARGETS, LR_SCHEDULES, format_overrides, parse_override

__all__ = ["fit", "ask_for_host_devices", "worker_arguments"]


def ask_for_host_devices(num_devices: int, environ=None, modules=None) -> bool:
    """Ask XLA for ``num_devices`` CPU devices (``--num-devices``): add the flag to XLA_FLAGS.

    Only where JAX is not imported yet (it reads XLA_FLAGS once, at import) and XLA_FLAGS
    does not set the count already; it adds host (CPU) devices only, so GPUs are unaffected.
    Returns whether it changed the environment.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    flag = "--xla_force_host_platform_device_count"
    flags = environ.get("XLA_FLAGS", "")
    if num_devices <= 1 or flag in flags or "jax" in modules:
        return False
    environ["XLA_FLAGS"] = f"{flags} {flag}={num_devices}".strip()
    return True


def worker_arguments(
    spec: Path | None, resume: Path | None, run_dir: Path, settings: dict, plugins, *, force: bool, quiet: bool
) -> list[str]:
    """The ``ppvae fit`` arguments of every worker of ``--num-processes``, built from the parsed values.

    Every spec option reaches the workers as the setting it stands for (``--set KEY=VALUE``,
    ``settings`` holds them by dotted key), so the workers build exactly the config that the
    launching process checked; ``run_dir`` is named explicitly so that all of them agree on it.
    """
    args = [str(spec)] if spec is not None else []
    args += ["--resume", str(resume)] if resume is not None else ["--out", str(run_dir)]
    for key, value in settings.items():
        for text in format_overrides(key, value):
            args += ["--set", text]
    for path in plugins:
        args += ["--plugin", str(path)]
    return args + (["--force"] if force else []) + (["--quiet"] if quiet else [])


def _fit_on_processes(num_processes, spec, resume, out, overrides, plugins, shortcuts, *, force, quiet) -> None:
    """``ppvae fit --num-processes N`` (N != 1): check, then run the same fit on N workers."""
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
    # Chosen once here when --out is not given: every worker must name the same folder.
    run_dir = resume if resume is not None else (out if out is not None else default_run_dir())
    # Shortcuts after --set, as api.fit applies them.
    settings = {**overrides, **{api.SHORTCUTS[k]: v for k, v in shortcuts.items() if v is not None}}
    args = worker_arguments(spec, resume, run_dir, settings, plugins, force=force, quiet=quiet)
    code = launch_fit(args, num_processes, run_dir)
    if code:
        sys.exit(code)


@click.command(context_settings=CONTEXT)
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@data_option("embedded (default), mnist, fashion-mnist, a folder of MNIST-format files, or a .npy/.npz/.csv file.")
@click.option("--backend", help="Inference backend (default pyro).")
@click.option("--prior", help="Prior p(z) by registered name (default normal).")
@click.option("--likelihood", help="Likelihood p(x|z): bernoulli, continuous_bernoulli, normal, ...")
@click.option("--encoder", help="Encoder network: mlp or conv.")
@click.option("--decoder", help="Decoder network: mlp, conv or linear.")
@click.option(
    "--guide",
    help="Family of q(z|x): diagonal (default), lowrank, fullrank or iaf; "
    "settings with --set model.guide_options.rank=4.",
)
@click.option("--latent-dim", type=int, help="Size of z (default 20).")
@click.option("--epochs", type=int, help="Passes over the training split (default 30).")
@click.option(
    "--batch-size",
    type=int,
    help="Minibatch size (default 128); per process with --num-processes, "
    "global (split over the devices) with --num-devices.",
)
@click.option("--beta", type=float, help="KL weight β > 0 (default 1: the plain ELBO).")
@click.option("--beta-schedule", type=click.Choice(BETA_SCHEDULES), help="constant, linear warm-up or cyclical.")
@click.option("--lr", type=float, help="Adam learning rate (default 1e-3; the peak of a schedule).")
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    help="Learning rate by epoch: constant (default); exponential or step (train.lr_decay every "
    "train.lr_step_epochs); cosine (to train.lr_min, after train.lr_warmup_epochs of warm-up); iwae "
    "(the IWAE paper's 3^i epochs at lr 10^(-i/7)).",
)
@click.option(
    "--clip-grad-norm",
    type=float,
    help="Rescale each step's gradient to at most this global norm (default 0: no clipping).",
)
@click.option(
    "--free-bits",
    type=float,
    metavar="NATS",
    help="Floor each latent dimension's KL at NATS in the ELBO's KL term, so no dimension is pushed "
    "onto the prior early (Kingma et al. 2016; default 0: off; meanfield or trace, diagonal guide).",
)
@click.option(
    "--init-decoder-bias/--no-init-decoder-bias",
    default=None,
    help="Start the decoder's output bias at the training data's log-odds (Bernoulli), so it draws the "
    "average image before training: keeps a VampPrior with tanh networks from collapsing.",
)
@click.option(
    "--validation-fraction",
    type=float,
    help="Share of the training rows kept aside as a validation split (default 0: none). Each epoch "
    "reports its ELBO; the best epoch's weights are kept as the best checkpoint.",
)
@click.option(
    "--early-stopping-patience",
    type=int,
    metavar="EPOCHS",
    help="Stop after this many epochs without a better validation ELBO (default 0: never; "
    "train.early_stopping_min_delta sets what counts as better). Needs --validation-fraction.",
)
@click.option(
    "--log",
    type=click.Choice(LOG_TARGETS),
    help="Also write each epoch's curves as TensorBoard event files to RUN/tensorboard "
    "(training and validation ELBO, KL, active units, learning rate, gradient norm); "
    "needs pip install 'ppvae[tensorboard]'. Watch with: tensorboard --logdir RUN.",
)
@click.option("--elbo", type=click.Choice(estimator_names()), help=estimators_help())
@click.option("--num-particles", type=int, help="Samples of z per datapoint (K for iwae and dreg).")
@seed_option("Seed of every random draw in training (default 0).", default=None)
@device_option(default=None, help="auto (default), cpu, cuda or cuda:N.")
@out_option("Run folder to write (default runs/run-<timestamp>).", kind="folder", required=False)
@set_option(
    "Any spec setting, e.g. --set model.encoder_options.hidden=[512,256] "
    "--set model.likelihood_options.scale_mode=per_dim. Repeatable."
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last checkpoint.",
)
@force_option("Overwrite the files of an existing run folder given by --out.")
@quiet_option("No progress bars.")
@click.option(
    "--num-processes",
    type=int,
    metavar="N",
    help="Data-parallel training on N local processes (pyro backend; the same as torchrun "
    "--nproc-per-node N -m ppvae fit ...). Each process takes --batch-size points per step, "
    "so a step sees N times as many; gradients are averaged. CPU: gloo; CUDA: one GPU each.",
)
@click.option(
    "--num-devices",
    type=int,
    metavar="N",
    help="Data-parallel training on N JAX devices in this process (numpyro backend; train.num_devices): "
    "--batch-size is the global batch, split evenly over the devices. On CPU, JAX needs "
    "XLA_FLAGS=--xla_force_host_platform_device_count=N before it starts; ppvae fit sets it "
    "itself unless JAX is already loaded (a --plugin that imports it) or XLA_FLAGS sets it.",
)
@with_plugins
def fit(
    spec,
    data,
    backend,
    prior,
    likelihood,
    encoder,
    decoder,
    guide,
    latent_dim,
    epochs,
    batch_size,
    beta,
    beta_schedule,
    lr,
    lr_schedule,
    clip_grad_norm,
    free_bits,
    init_decoder_bias,
    validation_fraction,
    early_stopping_patience,
    log,
    elbo,
    num_particles,
    seed,
    device,
    out,
    settings,
    resume,
    force,
    quiet,
    num_processes=None,
    num_devices=None,
    plugins=(),
):
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
      ppvae fit --validation-fraction 0.1 --early-stopping-patience 10 --epochs 500
      ppvae fit --log tensorboard --out runs/watched   # then: tensorboard --logdir runs/watched
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
    shortcuts = dict(
        data=data,
        backend=backend,
        prior=prior,
        likelihood=likelihood,
        encoder=encoder,
        decoder=decoder,
        guide=guide,
        latent_dim=latent_dim,
        epochs=epochs,
        batch_size=batch_size,
        beta=beta,
        beta_schedule=beta_schedule,
        lr=lr,
        lr_schedule=lr_schedule,
        clip_grad_norm=clip_grad_norm,
        free_bits=free_bits,
        init_decoder_bias=init_decoder_bias,
        validation_fraction=validation_fraction,
        early_stopping_patience=early_stopping_patience,
        log=log,
        elbo=elbo,
        num_particles=num_particles,
        seed=seed,
        device=device,
        num_devices=num_devices,
    )
    if num_devices is not None:
        ask_for_host_devices(num_devices)
    if num_processes is not None and num_processes != 1:  # one process: this one
        _fit_on_processes(num_processes, spec, resume, out, overrides, plugins, shortcuts, force=force, quiet=quiet)
        return
    echo = progress_echo(quiet)
    run = api.fit(
        spec,
        out=out,
        resume=resume,
        force=force,
        progress=not quiet,
        overrides=overrides,
        echo=echo,
        plugins=plugins,
        **shortcuts,
    )
    if run.summary is None:  # a process other than rank 0 of a multi-process job: rank 0 reports
        return
    ev = run.summary["evaluation"]
    last = run.summary["final_epoch"] or {}
    click.echo(f"run folder: {run.path}")
    click.echo(
        f"epochs {run.summary['epochs']}, {run.summary['train_seconds']:.1f} s of training, "
        f"{fmt(last.get('images_per_s'), 0)} images/s"
        + (" (stopped early)" if run.summary.get("stopped_early") else "")
    )
    chosen = run.summary.get("checkpoint") or {}
    if chosen.get("which") == "best":
        click.echo(f"best checkpoint: epoch {chosen['epoch']} (best validation ELBO); the figures below are its")
    click.echo(
        f"held-out ELBO:   {fmt(ev['heldout_elbo'])} nats per datapoint "
        f"(reconstruction {fmt(ev['reconstruction'])}, KL {fmt(ev['kl'])})"
    )
    click.echo(
        f"held-out log p(x) >= {fmt(ev['heldout_log_px'])} ± {fmt(ev['heldout_log_px_stderr'])} "
        f"(IWAE bound, K = {ev['num_samples']})"
    )
    if "exact_log_px" in ev:
        click.echo(f"exact log p(x):  {fmt(ev['exact_log_px'])} (linear-Gaussian model)")
    click.echo(f"active units: {ev['active_units']} of {run.config.model.latent_dim}")
    click.echo(f"pictures: {run.path / 'samples.png'}, {run.path / 'reconstructions.png'}, {run.path / 'loss.png'}")
