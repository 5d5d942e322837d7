"""``ppvae plot``: pictures of a run's latent space."""

from __future__ import annotations


import click

from ppvae.cli.options import (
    CONTEXT,
    checkpoint_option,
    data_option,
    device_option,
    force_option,
    out_option,
    run_argument,
    with_plugins,
)
from ppvae.cli.outputs import check_out

__all__ = ["plot"]


@click.group(context_settings=CONTEXT)
def plot():
    """Pictures of a run's latent space: the map of the data's codes, and interpolations.

    \b
    Examples:
      ppvae plot latent runs/z2 --out latent.png
      ppvae plot interpolate runs/z2 --between 0 1 --steps 12 --out line.png
    """


@plot.command("latent", context_settings=CONTEXT)
@run_argument
@data_option("Points to map (default: the run's held-out split).")
@out_option("A .png file.")
@click.option(
    "--grid-size",
    type=int,
    default=15,
    show_default=True,
    help="Values per axis of the decoded manifold grid (2-D latents).",
)
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def plot_latent(run, data, out, grid_size, device, checkpoint, force):
    """The latent map: posterior means of the data, coloured by label.

    A 2-D latent is drawn as it is, beside the decoded manifold: the means of p(x|z) on a
    grid of z at standard Normal quantiles (5% to 95%), tiled. A larger latent is
    projected to its first two principal components (the axis labels say which).

    \b
    Examples:
      ppvae plot latent runs/z2 --out latent.png
      ppvae plot latent runs/first --data digits.npz --out latent_pca.png
    """
    check_out(out, force, (".png",))
    from ppvae import api
    from ppvae.plotting.latents import plot_latent as draw

    r = api.load(run, device=device, checkpoint=checkpoint)
    x, labels = r.load_data(data)
    draw(r, x, out, labels=labels, grid_size=grid_size, source=data or "held-out split")
    click.echo(f"wrote the latent map of {len(x)} points to {out}")


@plot.command("interpolate", context_settings=CONTEXT)
@run_argument
@click.option(
    "--between",
    nargs=2,
    type=int,
    required=True,
    metavar="I J",
    help="Indices of the two datapoints (0-based) in the data.",
)
@click.option("--steps", type=int, default=10, show_default=True, help="Decoded points along the line, ends included.")
@data_option("Where the two points come from (default: the run's held-out split).")
@out_option("A .png file.")
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def plot_interpolate(run, between, steps, data, out, device, checkpoint, force):
    """Decode the straight line between the latent means of two datapoints.

    The strip shows datapoint I, the decoded means of p(x|z) for z moving in equal steps
    from I's posterior mean to J's, and datapoint J.

    \b
    Examples:
      ppvae plot interpolate runs/z2 --between 0 1 --out line.png
      ppvae plot interpolate runs/z2 --between 3 42 --steps 16 --data digits.npz --out line.png
    """
    check_out(out, force, (".png",))
    from ppvae import api
    from ppvae.plotting.latents import plot_interpolation

    r = api.load(run, device=device, checkpoint=checkpoint)
    x, labels = r.load_data(data)
    i, j = between
    plot_interpolation(r, x, i, j, out, steps=steps, labels=labels, source=data or "held-out split")
    click.echo(f"wrote the interpolation between points {i} and {j} ({steps} steps) to {out}")
