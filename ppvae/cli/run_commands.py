"""Commands that use a trained run: ``evaluate``, ``sample``, ``reconstruct``, ``encode`` and ``decode``."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import click
import numpy as np

from ppvae.cli.options import (
    CONTEXT,
    data_option,
    checkpoint_option,
    device_option,
    force_option,
    json_option,
    label_option,
    num_samples_option,
    out_option,
    run_argument,
    seed_option,
    with_plugins,
)
from ppvae.cli.outputs import check_out, fmt, refuse_existing, write_array
from ppvae.errors import UsageError
from ppvae.model.hierarchy import latent_sites
from ppvae.runs.atomic import atomic_path

__all__ = ["evaluate", "sample", "reconstruct", "encode", "decode"]


def _run_labels(r, labels, data) -> np.ndarray | None:
    """The data's labels where the run is conditional (they are fed to the networks), else None."""
    if not r.num_classes:
        return None
    if labels is None:
        from ppvae.errors import DataError

        raise DataError(
            f"{r.path} is a conditional VAE: it needs the class label of every point, but "
            f"{data or 'its held-out split'} has none; use data with labels (an .npz with 'y')"
        )
    return labels


def _check_label_option(r, label) -> None:
    if label is not None and not r.num_classes:
        raise UsageError(f"--label: {r.path} is not a conditional run (model.conditional = false); drop --label")


@click.command(context_settings=CONTEXT)
@run_argument
@data_option("Evaluate on this source instead of the run's held-out split (a file is prepared like the training data).")
@num_samples_option("K of the importance-weighted log p(x) bound (chunked: memory stays bounded).")
@seed_option("Seed of the importance samples.")
@device_option()
@checkpoint_option()
@json_option("Print the numbers as JSON.")
@with_plugins
def evaluate(run, data, num_samples, seed, device, checkpoint, as_json):
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
    from ppvae import api

    r = api.load(run, device=device, checkpoint=checkpoint)
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
    click.echo(f"  held-out ELBO        {fmt(ev['heldout_elbo'])}")
    click.echo(f"  reconstruction       {fmt(ev['reconstruction'])}")
    click.echo(f"  KL                   {fmt(ev['kl'])}")
    click.echo(
        f"  log p(x) (K={ev['num_samples']}) >= {fmt(ev['heldout_log_px'])} ± {fmt(ev['heldout_log_px_stderr'])}"
    )
    if "exact_log_px" in ev:
        click.echo(f"  exact log p(x)       {fmt(ev['exact_log_px'])}")
    if "bits_per_dim" in ev:
        click.echo(f"  bits per dimension   {fmt(ev['bits_per_dim'], 4)}")
    click.echo(f"  active units         {ev['active_units']} of {len(ev['kl_per_dim'])}")
    if "linear_probe_accuracy" in ev:
        probe = ev["linear_probe"]
        click.echo(
            f"  linear probe         {ev['linear_probe_accuracy']:.1%} accuracy (logistic regression on the "
            f"latent means; trained on the {probe['trained_on']}; scored on the {probe['scored_on']})"
        )


@click.command(context_settings=CONTEXT)
@run_argument
@click.option("-n", "--num", type=int, default=64, show_default=True, help="How many samples.")
@out_option("samples.png (a picture) or samples.npy (the array).")
@seed_option()
@label_option(
    "Conditional runs: the class of every sample. Without it, a conditional run gives "
    "one row per class (N / classes samples each, rounded up)."
)
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def sample(run, num, out, seed, label, device, checkpoint, force):
    """Generate new data: decode z drawn from the prior.

    \b
    Examples:
      ppvae sample runs/z2 -n 100 --out samples.png
      ppvae sample runs/z2 -n 1000 --out samples.npy --seed 1
      ppvae sample runs/cvae --label 3 -n 64 --out threes.png      # a conditional run
      ppvae sample runs/cvae -n 80 --out by_class.png              # one row per class
    """
    check_out(out, force, (".png", ".npy"))
    from ppvae import api

    r = api.load(run, device=device, checkpoint=checkpoint)
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
    write_array(out, x, force, is_image=r.data_info["is_image"], title=title, ncols=ncols)
    click.echo(f"wrote {len(x)} samples to {out}")


@click.command(context_settings=CONTEXT)
@run_argument
@data_option("Source to reconstruct (default: the run's held-out split).")
@click.option("-n", "--num", type=int, default=None, help="Only the first N points.")
@out_option("recon.png (data beside reconstructions) or recon.npy (the reconstructions).")
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def reconstruct(run, data, num, out, device, checkpoint, force):
    """Compress and recover: encode data to z (posterior mean) and decode it.

    \b
    Examples:
      ppvae reconstruct runs/z2 -n 16 --out recon.png
      ppvae reconstruct runs/z2 --data digits.npy --out recon.npy

    A conditional run is given the data's labels.
    """
    check_out(out, force, (".png", ".npy"))
    from ppvae import api
    from ppvae.plotting.images import reconstruction_grid

    r = api.load(run, device=device, checkpoint=checkpoint)
    x, labels = r.load_data(data)
    labels = _run_labels(r, labels, data)
    if num is not None:
        if num <= 0:
            raise UsageError(f"-n must be positive, got {num}")
        x = x[:num]
        labels = None if labels is None else labels[:num]
    recon = r.reconstruct(x, labels)
    if out.suffix.lower() == ".png" and r.data_info["is_image"]:
        refuse_existing(out, force)
        reconstruction_grid(x[:32], recon[:32], out, title="data and reconstructions")
    else:
        write_array(out, recon, force, is_image=r.data_info["is_image"])
    click.echo(f"wrote {len(recon)} reconstructions to {out}")


@click.command(context_settings=CONTEXT)
@run_argument
@data_option("Source to encode (default: the run's held-out split).")
@out_option(
    "latents.npz (arrays loc, scale and labels if any; loc_z2, scale_z2, ... for the layers above z1 of a "
    "hierarchical run) or latents.npy (shape (n, 2, latent_dim): loc then scale of z1)."
)
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def encode(run, data, out, device, checkpoint, force):
    """Encode data to the posterior q(z|x): its loc and scale per point.

    The loc is the compressed code; `ppvae decode` turns it back into data.

    \b
    Examples:
      ppvae encode runs/z2 --out latents.npz
      ppvae encode runs/z2 --data digits.npy --out latents.npy

    A conditional run encodes with the data's labels (q(z|x,y)); the .npz keeps them, so
    `ppvae decode` uses them again. A hierarchical run (model.latent_layers) writes z1 as loc
    and scale, and each layer above as loc_z2, scale_z2, ... (q(z2|z1) at z1's loc).
    """
    check_out(out, force, (".npz", ".npy"))
    from ppvae import api

    r = api.load(run, device=device, checkpoint=checkpoint)
    x, labels = r.load_data(data)
    layers = r.encode_layers(x, _run_labels(r, labels, data))
    (loc, scale), above = layers[0], layers[1:]
    refuse_existing(out, force)
    if out.suffix.lower() == ".npz":
        arrays = {"loc": loc, "scale": scale, **({"labels": labels} if labels is not None else {})}
        for site, (site_loc, site_scale) in zip(latent_sites(len(layers))[1:], above):
            arrays.update({f"loc_{site}": site_loc, f"scale_{site}": site_scale})
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    elif out.suffix.lower() == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.stack([loc, scale], axis=1))
    else:
        raise UsageError(f"--out {str(out)!r}: use a .npz or .npy file name")
    sizes = " + ".join(str(layer[0].shape[1]) for layer in layers)
    click.echo(f"wrote loc and scale of {len(loc)} points ({sizes} latent dimensions) to {out}")


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
        raise UsageError(
            f"cannot read latents from {str(path)!r} ({reason}); give the .npz or .npy "
            "that `ppvae encode` wrote, or an (n, latent_dim) array saved with numpy.save"
        ) from None
    # (n, 2, Z) as written by `ppvae encode --out X.npy`: take the loc.
    return z[:, 0] if z.ndim == 3 and z.shape[1] == 2 else z


def _latent_labels(path: Path) -> np.ndarray | None:
    """The ``labels`` array of an .npz written by `ppvae encode`, or None."""
    if path.suffix.lower() != ".npz":
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["labels"] if "labels" in f.files else None


@click.command(context_settings=CONTEXT)
@run_argument
@click.option(
    "--latents",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="(n, latent_dim) .npy, or the output of `ppvae encode` (.npz or .npy).",
)
@out_option("decoded.png or decoded.npy.")
@label_option(
    "Conditional runs: decode every latent as this class (default: the labels stored "
    "in the .npz that `ppvae encode` wrote)."
)
@device_option()
@checkpoint_option()
@force_option()
@with_plugins
def decode(run, latents, out, label, device, checkpoint, force):
    """Decode latents into data: the mean of p(x|z) (p(x|z,y) for a conditional run).

    \b
    Examples:
      ppvae encode runs/z2 --out codes.npz && ppvae decode runs/z2 --latents codes.npz --out recovered.png
      python -c "import numpy as np; np.save('grid.npy', np.mgrid[-2:2:8j, -2:2:8j].reshape(2, -1).T)"
      ppvae decode runs/z2 --latents grid.npy --out manifold.png
      ppvae decode runs/cvae --latents grid.npy --label 3 --out threes.png   # a conditional run
    """
    check_out(out, force, (".png", ".npy"))
    from ppvae import api

    r = api.load(run, device=device, checkpoint=checkpoint)
    _check_label_option(r, label)
    z = _read_latents(latents)
    labels = label
    if r.num_classes and label is None:
        labels = _latent_labels(latents)
        if labels is None:
            raise UsageError(
                f"{r.path} is a conditional VAE: give the class with --label (0 .. "
                f"{r.num_classes - 1}), or latents in an .npz with 'labels' (as `ppvae encode` writes)"
            )
    x = r.decode(z, labels)
    write_array(out, x, force, is_image=r.data_info["is_image"], title=f"decoded from {latents.name}")
    click.echo(f"wrote {len(x)} decoded points to {out}")
