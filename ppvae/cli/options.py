"""The options that several commands share, each declared once here.

Every command that reads data takes ``--data`` the same way, every command that opens a run
takes ``--device`` and ``--checkpoint`` and validates them the same way, every command that writes a file takes
``--out`` and ``--force`` with the same meaning, and every command takes ``--plugin``. A
command passes its own help text where the meaning is narrower than the default.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Callable

import click

from ppvae.spec.config import validate_device

__all__ = [
    "CONTEXT",
    "run_argument",
    "data_option",
    "device_option",
    "checkpoint_option",
    "out_option",
    "force_option",
    "json_option",
    "quiet_option",
    "seed_option",
    "set_option",
    "label_option",
    "num_samples_option",
    "with_plugins",
    "progress_echo",
]

#: Context settings of every command: -h as well as --help, and help text up to 100 columns.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: The RUN argument: a run folder written by ``ppvae fit``.
run_argument = click.argument("run", type=click.Path(path_type=Path))


def _valid_device(ctx, param, value):
    # Checked while the options are parsed, so a bad device is one line before any work.
    if value is not None:
        validate_device(value)
    return value


def device_option(default: str | None = "auto", help: str = "auto, cpu, cuda or cuda:N.") -> Callable:
    """``--device``: where the networks run.

    On a command that opens a run, the device is checked as the options are parsed. With
    ``default=None`` (fit, compare) it is a spec setting like any other: ``train.device``,
    checked with the spec, and the error names that key.
    """
    return click.option(
        "--device",
        default=default,
        show_default=default is not None,
        callback=None if default is None else _valid_device,
        help=help,
    )


def checkpoint_option() -> Callable:
    """``--checkpoint best|last``: which weights of a run a command uses (default: best when there is one)."""
    return click.option(
        "--checkpoint",
        type=click.Choice(["best", "last"]),
        default=None,
        help="Weights to use: best (the epoch with the best validation ELBO; the default when the run "
        "was trained with a validation split) or last (where training stopped).",
    )


def data_option(help: str = "Source to read (default: the run's held-out split).") -> Callable:
    """``--data``: a source read like the training data (embedded, mnist, a folder, .npy/.npz/.csv)."""
    return click.option("--data", help=help)


def out_option(help: str, *, kind: str = "file", required: bool = True) -> Callable:
    """``--out``: what a command writes; ``kind`` is ``"file"``, ``"folder"`` or ``"path"``.

    ``"path"`` leaves the check to the command (``compare`` refuses an existing file itself,
    in one line, as it refuses an existing folder without ``--force``).
    """
    types = {
        "file": click.Path(dir_okay=False, path_type=Path),
        "folder": click.Path(file_okay=False, path_type=Path),
        "path": click.Path(path_type=Path),
    }
    return click.option("--out", required=required, type=types[kind], help=help)


def force_option(help: str = "Overwrite --out if it exists.") -> Callable:
    """``--force``: without it nothing that exists is overwritten."""
    return click.option("--force", is_flag=True, help=help)


def json_option(help: str = "Print the numbers as JSON.") -> Callable:
    """``--json``: print machine-readable output instead of the table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = "No progress messages or bars.") -> Callable:
    """``-q/--quiet``."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def seed_option(help: str | None = None, default: int | None = 0) -> Callable:
    """``--seed``: the seed of a command's random draws."""
    return click.option("--seed", type=int, default=default, show_default=default is not None, help=help)


def set_option(help: str = "Any spec setting, as for ppvae fit. Repeatable.") -> Callable:
    """``--set KEY=VALUE`` (repeatable): any spec setting by its dotted key."""
    return click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help=help)


def label_option(help: str) -> Callable:
    """``--label``: the class of a conditional run's outputs."""
    return click.option("--label", type=int, default=None, help=help)


def num_samples_option(help: str) -> Callable:
    """``-k/--num-samples``: draws from q(z|x) per point (the K of the IWAE bound)."""
    return click.option("--num-samples", "-k", type=int, default=1000, show_default=True, help=help)


def with_plugins(fn: Callable) -> Callable:
    """Give a command ``--plugin FILE`` (repeatable): plug-in files loaded before it runs.

    A command whose function takes a ``plugins`` parameter receives the files' absolute
    paths (``ppvae fit`` records them in the run's config.toml); others only need the
    components registered.
    """
    wants_paths = "plugins" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args, plugin_files=(), **kwargs):
        from ppvae.spec.plugins import load_plugins

        paths = load_plugins(plugin_files)
        if wants_paths:
            kwargs["plugins"] = paths
        return fn(*args, **kwargs)

    return click.option(
        "--plugin",
        "plugin_files",
        multiple=True,
        metavar="FILE",
        type=click.Path(path_type=Path),
        help="A .py plug-in file that registers custom components (ppvae.register); loaded first. Repeatable.",
    )(wrapper)


def progress_echo(quiet: bool) -> Callable[[str], None]:
    """Where progress messages go: stderr, or nowhere with ``--quiet``."""
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
