"""The hand-written PyTorch training loop of the reference VAE: the Pyro backend's yardstick.

Protocol MNIST-10k v1 (``../shared/benchmarks/PROTOCOL.md``), network mlp-400 by default:
encoder 784-400-(Z loc, Z scale) with a softplus scale (+ 1e-5, as ppvae's networks), decoder
Z-400-784 logits, ReLU, Bernoulli likelihood with logits, standard Normal prior, Adam
lr 1e-3, batch 128, Z = 20. Other MLPs by ``hidden`` (layer sizes) and ``activation``
(``relu``/``tanh``): the IWAE paper's 784-200-200-50 tanh network is
``hidden=(200, 200), activation="tanh", latent_dim=50``. What a PyTorch user writes without
a probabilistic language:

* ``nn.Linear`` layers with torch's default initialization (the same as ppvae's networks);
* loss = batch mean of [BCE-with-logits summed over pixels + KL], one reparameterized
  sample; the KL analytic (the baseline of ``elbo = "meanfield"``) or sampled,
  ``log q(z|x) - log p(z)`` (the baseline of ``elbo = "trace"``);
* the training images live on the device; every batch is drawn from them with the same
  order as ppvae (``default_rng([seed, epoch])``) and binarized by ``torch.bernoulli``;
* losses accumulate on the device; the host reads them once per epoch (no per-step sync).

:func:`same_function_check` feeds ppvae's initial weights, one binarized batch and the
same noise to both and compares the loss terms, so the two sides provably train the same
function. :meth:`HandTorch.heldout_log_px` is the protocol's held-out log p(x) (IWAE bound,
K samples, per image). Used by ``bench/suite.py``, ``bench/pyro_profile.py`` and
``bench/quality.py``.
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
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}
# Largest (K chunk x images x pixels) tensor of the held-out log p(x): 2**20 float32 values,
# 4 MiB, the bound ppvae's own evaluation uses (small chunks stay in cache on a CPU).
MAX_ELEMENTS = 2**20


def _sizes(hidden) -> tuple[int, ...]:
    """``hidden`` as a tuple of layer sizes: an int is one layer."""
    sizes = (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"hidden must be a positive int or a non-empty sequence of them, got {hidden!r}")
    return sizes


class HandVAE(nn.Module):
    """An MLP VAE as plain modules: ``forward(x, eps)`` gives (loss, reconstruction, KL) batch means.

    The default is mlp-400 (784-400-20, ReLU); ``hidden=(200, 200), activation="tanh",
    z_dim=50`` is the IWAE paper's one-stochastic-layer network. With ``num_particles`` K > 1
    the loss is the negative IWAE bound (``eps`` of shape (K, B, Z)).

    Parameters
    ----------
    x_dim : int
        Pixels per image.
    hidden : int or sequence of int
        Encoder hidden layer sizes, from the input on.
    z_dim : int
        Latent dimension.
    analytic_kl : bool
        Analytic KL (``meanfield``) or sampled ``log q(z|x) - log p(z)`` (``trace``), for K = 1.
    num_particles : int
        K of the IWAE bound; 1 is the ELBO.
    activation : str
        ``relu`` or ``tanh``, after every hidden layer (not after the heads).
    decoder_hidden : int or sequence of int, optional
        Decoder hidden sizes, from z on; default the encoder's reversed (as ppvae's specs).
    """

    def __init__(
        self,
        x_dim: int = 784,
        hidden=400,
        z_dim: int = 20,
        analytic_kl: bool = True,
        num_particles: int = 1,
        activation: str = "relu",
        decoder_hidden=None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        enc_sizes = _sizes(hidden)
        dec_sizes = enc_sizes[::-1] if decoder_hidden is None else _sizes(decoder_hidden)
        # Built in the order of the original mlp-400 class (encoder, loc, scale, decoder, out):
        # torch's default initialization then draws the same weights for the same seed, so
        # the figures measured before the generalization are reproduced exactly.
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip((x_dim, *enc_sizes[:-1]), enc_sizes))
        self.loc = nn.Linear(enc_sizes[-1], z_dim)
        self.raw_scale = nn.Linear(enc_sizes[-1], z_dim)
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip((z_dim, *dec_sizes[:-1]), dec_sizes))
        self.out = nn.Linear(dec_sizes[-1], x_dim)
        self.z_dim, self.analytic_kl, self.num_particles = z_dim, analytic_kl, num_particles
        self.activation = activation
        self._act = ACTIVATIONS[activation]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(loc, scale)`` of q(z|x) for flat images ``x`` (B, x_dim)."""
        h = x
        for layer in self.enc:
            h = self._act(layer(h))
        return self.loc(h), F.softplus(self.raw_scale(h)) + MIN_SCALE

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x|z), any leading dimensions."""
        h = z
        for layer in self.dec:
            h = self._act(layer(h))
        return self.out(h)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        loc, scale = self.encode(x)
        z = loc + scale * eps
        logits = self.decode(z)
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
        """Take the weights of a ppvae MLP VAE (Pyro backend), layer by layer.

        Parameters
        ----------
        vae : ppvae.backends.pyro.model.VAE
            Built with the ``mlp`` encoder and decoder of the same sizes as this network.

        Returns
        -------
        HandVAE
            ``self``, for chaining.

        Raises
        ------
        ValueError
            Where the two networks' layer counts or shapes differ (``copy_`` would
            otherwise broadcast a mismatched tensor without a word).
        """
        body = [m for m in vae.encoder.body.modules() if isinstance(m, nn.Linear)]
        dec = [m for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
        head = vae.encoder.head
        mine = [*self.enc, self.loc, self.raw_scale, *self.dec, self.out]
        theirs = [*body, head.loc, head.raw_scale, *dec]
        if len(mine) != len(theirs):
            raise ValueError(
                f"ppvae's network has {len(body)} encoder and {len(dec) - 1} decoder hidden layers, "
                f"this one {len(self.enc)} and {len(self.dec)}"
            )
        with torch.no_grad():
            for a, b in zip(mine, theirs):
                if a.weight.shape != b.weight.shape:
                    raise ValueError(
                        f"layer shapes differ: {tuple(a.weight.shape)} here, {tuple(b.weight.shape)} in ppvae"
                    )
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
        return self


def hand_like(vae, analytic_kl: bool = True, num_particles: int = 1) -> HandVAE:
    """A :class:`HandVAE` of the same sizes and activation as a ppvae Pyro MLP VAE, with its weights.

    Parameters
    ----------
    vae : ppvae.backends.pyro.model.VAE
        A VAE with the ``mlp`` encoder and decoder (``relu`` or ``tanh``).
    analytic_kl, num_particles
        As :class:`HandVAE`.

    Returns
    -------
    HandVAE
        The twin network, holding ``vae``'s current weights.
    """
    body = [m for m in vae.encoder.body.modules() if isinstance(m, nn.Linear)]
    dec = [m for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
    names = {nn.ReLU: "relu", nn.Tanh: "tanh"}
    act = type(vae.encoder.act)
    if act not in names:
        raise ValueError(f"the hand-written twin has relu and tanh only, not {act.__name__}")
    hand = HandVAE(
        x_dim=body[0].in_features,
        hidden=[m.out_features for m in body],
        z_dim=vae.latent_dim,
        analytic_kl=analytic_kl,
        num_particles=num_particles,
        activation=names[act],
        decoder_hidden=[m.out_features for m in dec[:-1]],
    )
    return hand.copy_from(vae)


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
    latent_dim : int
        Z.
    hidden : int or sequence of int
        Encoder hidden sizes (the decoder's are reversed), e.g. 400 or (200, 200).
    num_particles : int
        K > 1 trains on the IWAE bound with K samples.
    activation : str
        ``relu`` or ``tanh``.
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
        hidden=400,
        num_particles: int = 1,
        activation: str = "relu",
    ):
        self.name = "hand-written PyTorch " + (
            f"IWAE K = {num_particles}" if num_particles > 1 else "analytic KL" if analytic_kl else "sampled KL"
        )
        self.device = torch.device(device)
        self.seed, self.batch_size, self.epoch = seed, batch_size, 0
        torch.manual_seed(seed)
        x_dim = int(np.prod(np.shape(x_train)[1:]))
        self.model = HandVAE(x_dim, hidden, latent_dim, analytic_kl, num_particles, activation).to(self.device)
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

    @torch.no_grad()
    def heldout_log_px(self, x_heldout, num_samples: int = 1000, chunk: int | None = None, seed: int = 0) -> float:
        """Held-out log p(x) per image by the importance-weighted bound, averaged over the images.

        For every image, ``log (1/K) sum_k p(x, z_k) / q(z_k|x)`` with ``z_k ~ q(z|x)``: the
        protocol's estimator, exact per datapoint (a running log-sum-exp over chunks of the
        K samples, in float64), so memory is bounded by the chunk, not by K.

        Parameters
        ----------
        x_heldout : numpy.ndarray
            Binarized held-out images, shape (n, 28, 28) or (n, 784).
        num_samples : int
            K, the importance samples per image.
        chunk : int, optional
            Samples per chunk; default as many as keep a (chunk, images, pixels) tensor
            within :data:`MAX_ELEMENTS`.
        seed : int
            Seed of the importance samples (a generator of its own: training's stream is untouched).

        Returns
        -------
        float
            The mean over the images of the per-image estimate, nats.
        """
        if not (isinstance(num_samples, int) and num_samples > 0):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        x = torch.as_tensor(np.asarray(x_heldout, dtype=np.float32).reshape(len(x_heldout), -1), device=self.device)
        model = self.model
        gen = torch.Generator(device=self.device).manual_seed(seed)
        images = 100  # images per batch: the chunk of K shrinks as the image batch grows
        per_image = []
        for start in range(0, x.shape[0], images):
            xb = x[start : start + images]
            k_chunk = chunk or max(1, MAX_ELEMENTS // (xb.shape[0] * xb.shape[1]))
            loc, scale = model.encode(xb)
            total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=self.device)
            done = 0
            while done < num_samples:
                k = min(k_chunk, num_samples - done)
                eps = torch.randn(k, *loc.shape, generator=gen, device=self.device)
                z = loc + scale * eps
                logits = model.decode(z)
                log_lik = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
                # log p(z) - log q(z|x) of diagonal Normals; the 0.5 log(2 pi) terms cancel.
                log_prior_ratio = (0.5 * eps**2 + scale.log() - 0.5 * z**2).sum(-1)
                log_w = (log_lik + log_prior_ratio).double()
                total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
                done += k
            per_image.append(total - math.log(num_samples))
        return float(torch.cat(per_image).mean())


def same_function_check(vae, xb: torch.Tensor, estimator: str, seed: int = 0) -> float:
    """Max |ppvae - hand-written| over (loss, reconstruction, KL) on one batch, same weights and noise.

    ``vae`` is a ppvae Pyro-backend mlp VAE (any hidden sizes, relu or tanh); ``xb`` a binarized batch (B, *event_shape); ``estimator``
    ``meanfield`` (compared with the analytic KL), ``trace`` (sampled KL) or ``iwae`` (K = 3).
    """
    from ppvae.backends.pyro.objectives import terms

    k = 3 if estimator == "iwae" else 1
    hand = hand_like(vae, analytic_kl=estimator == "meanfield", num_particles=k)
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
