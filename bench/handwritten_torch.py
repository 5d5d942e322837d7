"""The hand-written PyTorch training loop of the reference VAE: the Pyro backend's yardstick.

Protocol MNIST-10k v1 (``../shared/benchmarks/PROTOCOL.md``), network mlp-400: encoder
784-400-(Z loc, Z scale) with a softplus scale (+ 1e-5, as ppvae's networks), decoder
Z-400-784 logits, ReLU, Bernoulli likelihood with logits, standard Normal prior, Adam
lr 1e-3, batch 128, Z = 20. What a PyTorch user writes without a probabilistic language:

* ``nn.Linear`` layers with torch's default initialization (the same as ppvae's networks);
* loss = batch mean of [BCE-with-logits summed over pixels + KL], one reparameterized
  sample; the KL analytic (the baseline of ``elbo = "meanfield"``) or sampled,
  ``log q(z|x) - log p(z)`` (the baseline of ``elbo = "trace"``);
* the training images live on the device; every batch is drawn from them with the same
  order as ppvae (``default_rng([seed, epoch])``) and binarized by ``torch.bernoulli``;
* losses accumulate on the device; the host reads them once per epoch (no per-step sync).

:func:`same_function_check` feeds ppvae's initial weights, one binarized batch and the
same noise to both and compares the loss terms, so the two sides provably train the same
function. Used by ``bench/suite.py`` and ``bench/pyro_profile.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MIN_SCALE = 1e-5  # smallest posterior scale, as in ppvae's networks
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class HandVAE(nn.Module):
    """mlp-400 as plain modules: ``forward(x, eps)`` gives (loss, reconstruction, KL) batch means.

    With ``num_particles`` K > 1 the loss is the negative IWAE bound (``eps`` of shape (K, B, Z)).
    """

    def __init__(
        self, x_dim: int = 784, hidden: int = 400, z_dim: int = 20, analytic_kl: bool = True, num_particles: int = 1
    ):
        super().__init__()
        self.enc = nn.Linear(x_dim, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.raw_scale = nn.Linear(hidden, z_dim)
        self.dec = nn.Linear(z_dim, hidden)
        self.out = nn.Linear(hidden, x_dim)
        self.z_dim, self.analytic_kl, self.num_particles = z_dim, analytic_kl, num_particles

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        h = F.relu(self.enc(x))
        loc = self.loc(h)
        scale = F.softplus(self.raw_scale(h)) + MIN_SCALE
        z = loc + scale * eps
        logits = self.out(F.relu(self.dec(z)))
        rec = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        if self.num_particles > 1:  # IWAE: eps is (K, B, Z); -log mean_k w_k per datapoint
            log_ratio = (-0.5 * eps**2 - scale.log() + 0.5 * z**2).sum(-1)
            log_w = -rec - log_ratio
            bound = torch.logsumexp(log_w, 0) - math.log(self.num_particles)
            return -bound.mean(), rec.mean(), log_ratio.mean()
        if self.analytic_kl:
            kl = (0.5 * (scale**2 + loc**2 - 1.0) - scale.log()).sum(-1)
        else:  # log q(z|x) - log p(z); the 0.5 log(2 pi) terms cancel
            kl = (-0.5 * eps**2 - scale.log() + 0.5 * z**2).sum(-1)
        rec, kl = rec.mean(), kl.mean()
        return rec + kl, rec, kl

    def copy_from(self, vae) -> "HandVAE":
        """Take the weights of a ppvae mlp-400 VAE (Pyro backend), for a same-function check."""
        dec = [m for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
        head = vae.encoder.head
        pairs = [
            (self.enc, vae.encoder.body[0]),
            (self.loc, head.loc),
            (self.raw_scale, head.raw_scale),
            (self.dec, dec[0]),
            (self.out, dec[-1]),
        ]
        with torch.no_grad():
            for mine, theirs in pairs:
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        return self


class HandTorch:
    """The hand-written side: model, Adam, the training images on the device, one timed epoch.

    Parameters
    ----------
    x_train : numpy.ndarray
        Training images in [0, 1], shape (n, 28, 28) or (n, 784).
    seed, batch_size : int
        As ppvae's ``train.seed`` and ``train.batch_size``.
    analytic_kl : bool
        Analytic KL (baseline of ``meanfield``) or sampled KL (baseline of ``trace``).
    lr : float
        Adam learning rate.
    device : str
        ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        x_train,
        seed: int = 0,
        batch_size: int = 128,
        analytic_kl: bool = True,
        lr: float = 1e-3,
        device: str = "cpu",
        latent_dim: int = 20,
        hidden: int = 400,
        num_particles: int = 1,
    ):
        self.name = "hand-written PyTorch " + (
            f"IWAE K = {num_particles}" if num_particles > 1 else "analytic KL" if analytic_kl else "sampled KL"
        )
        self.device = torch.device(device)
        self.seed, self.batch_size, self.epoch = seed, batch_size, 0
        torch.manual_seed(seed)
        x_dim = int(np.prod(np.shape(x_train)[1:]))
        self.model = HandVAE(x_dim, hidden, latent_dim, analytic_kl, num_particles).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.x_train = torch.as_tensor(
            np.asarray(x_train, dtype=np.float32).reshape(len(x_train), -1), device=self.device
        )
        self.compile_seconds = 0.0
        self.last_loss = math.nan

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_epoch(self) -> float:
        """Train one epoch; returns its wall seconds (the host waits for the device at the end)."""
        n = self.x_train.shape[0]
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        self._sync()
        started = time.perf_counter()
        order = torch.as_tensor(perm, device=self.device)
        acc = torch.zeros((), device=self.device)
        for start in range(0, n, self.batch_size):
            xb = torch.bernoulli(self.x_train[order[start : start + self.batch_size]])
            k = self.model.num_particles
            eps = torch.randn(*((k,) if k > 1 else ()), xb.shape[0], self.model.z_dim, device=self.device)
            loss, _, _ = self.model(xb, eps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            acc += loss.detach() * xb.shape[0]
        self.last_loss = acc.item() / n  # the one host read of the epoch
        seconds = time.perf_counter() - started
        self.epoch += 1
        return seconds

    @torch.no_grad()
    def heldout_elbo(self, x_heldout) -> float:
        """Held-out ELBO per image (analytic KL, one draw), for the quality column."""
        x = torch.as_tensor(np.asarray(x_heldout, dtype=np.float32).reshape(len(x_heldout), -1), device=self.device)
        saved = self.model.analytic_kl, self.model.num_particles
        self.model.analytic_kl, self.model.num_particles = True, 1
        try:
            loss, _, _ = self.model(x, torch.randn(x.shape[0], self.model.z_dim, device=self.device))
        finally:
            self.model.analytic_kl, self.model.num_particles = saved
        return -float(loss)


def same_function_check(vae, xb: torch.Tensor, estimator: str, seed: int = 0) -> float:
    """Max |ppvae - hand-written| over (loss, reconstruction, KL) on one batch, same weights and noise.

    ``vae`` is a ppvae Pyro-backend mlp VAE; ``xb`` a binarized batch (B, *event_shape); ``estimator``
    ``meanfield`` (compared with the analytic KL), ``trace`` (sampled KL) or ``iwae`` (K = 3).
    """
    from ppvae.backends.pyro.objectives import terms

    k = 3 if estimator == "iwae" else 1
    hand = HandVAE(z_dim=vae.latent_dim, analytic_kl=estimator == "meanfield", num_particles=k).copy_from(vae)
    torch.manual_seed(seed)
    eps = torch.randn(*((k,) if k > 1 else ()), xb.shape[0], vae.latent_dim)
    torch.manual_seed(seed)  # the guide's rsample draws the same standard Normal noise
    saved = vae.dataset_size
    vae.dataset_size = None
    try:
        with torch.no_grad():
            t = terms(vae.model, vae.guide, xb, beta=1.0, estimator=estimator, num_particles=k)
            mine = hand(xb.reshape(xb.shape[0], -1), eps)
    finally:
        vae.dataset_size = saved
    theirs = (t.loss, t.reconstruction, t.kl)
    if k > 1:  # ppvae's IWAE terms report the sampled KL; compare the bound
        return abs(float(mine[0]) - float(theirs[0]))
    return max(abs(float(a) - float(b)) for a, b in zip(mine, theirs))
