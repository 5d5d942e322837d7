"""The ``ppvae`` group: every command attached, and the one error boundary of the command line.

User errors (every :class:`ppvae.errors.PPVAEError`, raised while options are parsed or a
command runs) become one line on stderr and the error's exit code (2 for usage errors);
Ctrl-C becomes "Interrupted." and 130; running out of memory (a model or batch too large
for the machine: numpy's MemoryError, or a framework's failed allocation) becomes one line
and 1. Never a traceback.
"""

from __future__ import annotations

import sys

import click

from ppvae.cli.analysis import compare, diagnose, score
from ppvae.cli.fit import fit
from ppvae.cli.models import models
from ppvae.cli.options import CONTEXT
from ppvae.cli.plot import plot
from ppvae.cli.run_commands import decode, encode, evaluate, reconstruct, sample
from ppvae.errors import PPVAEError

__all__ = ["cli", "main", "Commands"]


class Commands(click.Group):
    """A click group whose ``invoke`` is the command line's one error boundary."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PPVAEError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and not _is_allocation_failure(exc):
                raise
            click.echo(f"Error: {OUT_OF_MEMORY}", err=True)
            sys.exit(1)


#: The one line for a failed allocation.
OUT_OF_MEMORY = (
    "out of memory: the model or a batch does not fit on this machine; use a smaller latent_dim, "
    "smaller hidden sizes or latent_layers, a smaller --batch-size, or fewer --num-samples"
)


def _is_allocation_failure(exc: RuntimeError) -> bool:
    # torch reports a failed CPU allocation as a plain RuntimeError, and CUDA's as its subclass
    # OutOfMemoryError; the command line imports no framework, so it reads the message.
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


@click.group(cls=Commands, context_settings=CONTEXT)
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


for _command in (fit, evaluate, sample, reconstruct, encode, decode, compare, diagnose, models, score, plot):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ppvae")
