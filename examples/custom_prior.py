"""A custom prior written once and trained on both backends.

A Laplace prior with a learned scale is declared as a ``ppvae.Portable`` component:
its parameters and its distribution, nothing backend-specific. The same VAE is then
trained with Pyro and with NumPyro on the embedded MNIST digits, and both are evaluated.

    python examples/custom_prior.py            # 10 epochs per backend, a couple of minutes on 2 cores
    python examples/custom_prior.py --tiny     # a smoke run (1 epoch, few importance samples)
"""

from __future__ import annotations

import argparse

import numpy as np

import ppvae


@ppvae.register("prior", "learned_laplace")
class LearnedLaplace(ppvae.Portable):
    """Laplace(0, b) on every latent dimension, with the scale b learned."""

    def __init__(self, latent_dim, scale=1.0):
        self.param("log_scale", np.full(latent_dim, np.log(scale)))
        self.constant("loc", np.zeros(latent_dim))

    def distribution(self, dist, ops, p):
        return dist.Laplace(p["loc"], ops.exp(p["log_scale"])).to_event(1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one quick epoch per backend")
    parser.add_argument("--out", default="runs/custom-prior", help="folder for the two run folders")
    args = parser.parse_args(argv)
    overrides = {"train.eval_num_samples": 20 if args.tiny else 500}
    results = {}
    for backend in ("pyro", "numpyro"):
        run = ppvae.fit(
            prior="learned_laplace",
            backend=backend,
            latent_dim=10,
            epochs=1 if args.tiny else 10,
            out=f"{args.out}/{backend}",
            force=True,
            overrides=overrides,
        )
        ev = run.summary["evaluation"]
        results[backend] = ev
        print(
            f"{backend:8s} held-out ELBO {ev['heldout_elbo']:8.2f}   log p(x) >= {ev['heldout_log_px']:8.2f} "
            f"(K={ev['num_samples']})   pictures in {run.path}"
        )
    return results


if __name__ == "__main__":
    main()
