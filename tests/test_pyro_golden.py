"""Golden losses of the Pyro trainer: a fixed seed gives the same numbers, bit for bit.

Speed work on the Pyro training step (fast paths, validation switches, optimizer
settings) must not change results. A tiny mlp VAE is trained for two epochs through
``ppvae.fit`` with every estimator, and the per-epoch training losses, the held-out ELBO
after each epoch and the final log p(x) estimate are compared with values recorded from
the plain trace-based step. One torch thread: the summation order of a matrix product
(and so the last bits of a float32 loss) depends on the thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppvae

from conftest import FAST, embedded_digits

# Recorded with the trace-based step (Pyro traces of the model/guide pair per step). Per
# epoch: loss, reconstruction, KL, held-out ELBO; then log p(x) (IWAE, K = 7).
GOLDEN = {
    "meanfield": [
        499.92088012695314,
        495.94317016601565,
        3.9777353525161745,
        -335.95285181403165,
        312.5155975341797,
        279.2826812744141,
        33.232914733886716,
        -239.90662075281142,
        -234.32819386514225,
    ],
    "trace": [
        500.6647216796875,
        496.8485900878906,
        3.816172647476196,
        -336.7580149590969,
        314.31243896484375,
        279.9860046386719,
        34.32646789550781,
        -239.59670774936674,
        -235.43100483858672,
    ],
    "iwae": [
        494.30726928710936,
        496.14588623046876,
        3.421370303630829,
        -337.09164597392083,
        299.91808166503904,
        287.7596466064453,
        37.798614501953125,
        -266.97091269493103,
        -225.89979555488145,
    ],
    "dreg": [
        492.84669799804686,
        494.2668823242187,
        3.8613948702812193,
        -337.092311257124,
        299.54443359375,
        286.04905090332034,
        38.74593505859375,
        -265.51103123426435,
        -225.57256044541404,
    ],
}
# float32 losses after 6 Adam steps (lr 0.01, so every step moves the weights visibly):
# reordering a sum moves the last bits (~1e-7 relative); a real change of the step (another
# draw, another term) moves them by far more.
RTOL = 1e-6
KEYS = ("loss", "reconstruction", "kl", "heldout_elbo")


@pytest.fixture
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _fit(tmp_path, estimator: str):
    data = tmp_path / "digits.npz"
    np.savez(data, x=embedded_digits(200))
    particles = 3 if estimator in ("iwae", "dreg") else 1
    overrides = {
        **FAST,
        "data.source": str(data),
        "model.latent_dim": 4,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.elbo": estimator,
        "train.num_particles": particles,
        "train.seed": 3,
        "train.eval_num_samples": 7,
        "train.lr": 0.01,
    }
    run = ppvae.fit(out=tmp_path / estimator, overrides=overrides, pictures=False)
    values = [r[k] for r in run.metrics() for k in KEYS]
    return values + [run.summary["evaluation"]["heldout_log_px"]]


@pytest.mark.parametrize("estimator", sorted(GOLDEN))
def test_fixed_seed_gives_the_recorded_losses(tmp_path, estimator, one_thread):
    got = _fit(tmp_path, estimator)
    np.testing.assert_allclose(got, GOLDEN[estimator], rtol=RTOL)
