"""A convolutional VAE with a 2-D latent: compress, recover, generate, and map the latent plane.

models/conv-2d.toml encodes each 28x28 digit into a 2-D Normal q(z|x) with two strided
convolutions and decodes z with transposed convolutions. Two numbers per digit is a
compression ratio of 784 / 2 = 392, and a 2-D latent can be looked at directly. This
script trains it on 8,000 digits and shows, on the 2,000 held-out ones:

- compression and recovery: every held-out digit becomes 2 numbers (``codes.npz``: the
  posterior means and scales), decoded back into ``conv-reconstructions.png``;
- generation: new digits decoded from z ~ N(0, I) (``conv-samples.png``);
- the latent map (``conv-latent.png``): the held-out codes coloured by digit, beside the
  decoded manifold, a grid of z at Normal quantiles decoded into images. The classes
  form regions, but the codes do not fill the prior evenly (some classes sit in its
  tails), which is why some digits are rarer among the samples than in the data;
- the held-out ELBO, log p(x) and how well a linear classifier reads the digit off the
  2 numbers.

    python examples/conv_2d_latent.py               # 30 epochs, a few minutes on 2 cores
    python examples/conv_2d_latent.py --epochs 10   # shorter: the latent plane is less organized
    python examples/conv_2d_latent.py --tiny        # a smoke run (300 digits, 1 epoch), seconds

The same from the shell::

    ppvae fit models/conv-2d.toml --out runs/conv-2d
    ppvae encode runs/conv-2d --out codes.npz
    ppvae plot latent runs/conv-2d --out latent.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import ppvae
from ppvae import plotting as plots
from ppvae.data.standard import save_embedded_sample
from ppvae.plotting.latents import plot_latent

SPEC = Path(__file__).resolve().parents[1] / "models" / "conv-2d.toml"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 digits, tiny networks, 1 epoch: seconds")
    parser.add_argument("--out", default="runs/conv-2d", help="folder for the run and the pictures")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the spec's 30)")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # K = 100 importance samples: each is a pass through the convolutional decoder, so the
    # default K = 1000 on 2,000 held-out digits would take longer than the training on a CPU.
    overrides = {"train.eval_num_samples": 100, **({"train.epochs": args.epochs} if args.epochs else {})}
    if args.tiny:
        overrides = {
            "data.source": save_embedded_sample(out),
            "train.epochs": 1,
            "train.batch_size": 64,
            "train.eval_num_samples": 10,
            "model.encoder_options.channels": [4, 8],
            "model.encoder_options.hidden": [16],
            "model.decoder_options.channels": [8, 4],
        }
    run = ppvae.fit(SPEC, out=out / "conv-2d", force=True, overrides=overrides)
    ev = run.summary["evaluation"]
    x, labels = run.load_data()  # the held-out split and its digit labels
    pixels, dims = int(np.prod(run.event_shape)), run.config.model.latent_dim

    # Compression: each digit -> the mean (and scale) of q(z|x), 2 numbers. Recovery: decode them.
    loc, scale = run.encode(x)
    np.savez(out / "codes.npz", loc=loc, scale=scale, labels=labels)
    recovered = run.decode(loc)
    print(
        f"\ncompression: {pixels} pixels -> {dims} numbers per digit (ratio {pixels / dims:.0f}); "
        f"{len(loc)} held-out codes in {out / 'codes.npz'}"
    )
    print(
        f"  first digit ({labels[0]}): z = ({loc[0, 0]:+.2f}, {loc[0, 1]:+.2f}), "
        f"posterior sd ({scale[0, 0]:.2f}, {scale[0, 1]:.2f})"
    )
    print(
        f"  recovery: mean absolute pixel error {np.abs(recovered - x).mean():.3f} "
        "(binarized held-out digits against decoded pixel means)"
    )
    print(
        f"held-out ELBO {ev['heldout_elbo']:.2f} nats per digit (reconstruction {ev['reconstruction']:.2f}, "
        f"KL {ev['kl']:.2f}); log p(x) >= {ev['heldout_log_px']:.2f} ± {ev['heldout_log_px_stderr']:.2f} "
        f"(K = {ev['num_samples']}); active units {ev['active_units']} of {dims}"
    )
    # Under the prior the codes would have mean 0 and sd 1 on each axis; where they do not,
    # the samples (z ~ N(0, I)) do not look like the data in the same proportions.
    print(
        f"the codes of the held-out digits: mean ({loc[:, 0].mean():+.2f}, {loc[:, 1].mean():+.2f}), "
        f"sd ({loc[:, 0].std():.2f}, {loc[:, 1].std():.2f}), against (0, 0) and (1, 1) under the prior N(0, I)"
    )
    if "linear_probe_accuracy" in ev:
        print(
            f"a linear classifier reads the digit off the {dims} numbers with accuracy "
            f"{ev['linear_probe_accuracy']:.1%} (chance 10 %)"
        )

    pictures = [
        plots.reconstruction_grid(
            x[:10],
            recovered[:10],
            out / "conv-reconstructions.png",
            title=f"held-out digits, compressed to {dims} numbers and recovered",
        ),
        plots.image_grid(
            run.sample(64, seed=0),
            out / "conv-samples.png",
            ncols=8,
            title="64 new digits: means of p(x|z), z ~ N(0, I)",
        ),
        plot_latent(run, x, out / "conv-latent.png", labels=labels),
    ]
    print("pictures: " + ", ".join(map(str, pictures)))
    return {"evaluation": ev, "loc": loc}


if __name__ == "__main__":
    main()
