"""A trained VAE of the NumPyro backend, spoken to in numpy (same interface as the Pyro one)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from ppvae.model.conditioning import require_labels
from ppvae.spec.config import Config
from ppvae.data import Dataset
from ppvae.inference.metrics import evaluation_summary
from ppvae.inference.checkpoints import checkpoint_file
from ppvae.inference.training import fingerprint
from ppvae.backends.numpyro import checkpoint
from ppvae.backends.numpyro.evaluation import Evaluator, exact_log_px
from ppvae.backends.numpyro.guides import sample_with_log_prob
from ppvae.backends.numpyro.model import VAE, build_vae, initial_params
from ppvae.backends.numpyro.objectives import log_densities
from ppvae.model.priors import prior_distribution
from ppvae.backends.numpyro.trainer import Trainer, resolve_device

BATCH = 1000


class TrainedVAE:
    """A NumPyro-backend VAE with its params, with numpy in and out.

    Attributes
    ----------
    vae : VAE
    params : dict
        ``"<part>$params"`` -> parameter pytree.
    device : jax.Device
    num_classes : int
        C of a conditional VAE (methods then need labels ``y``), 0 for an unconditional one.
    """

    backend = "numpyro"
    #: Seconds spent compiling the training programs (not part of the epochs' ``seconds``).
    compile_seconds = 0.0

    def __init__(self, vae: VAE, params: dict, device):
        self.vae, self.params, self.device = vae, params, device
        self.num_classes = vae.num_classes
        self.evaluator = Evaluator(vae)
        # (loc, scale) only: an encoder serving a richer guide family also returns its extra values.
        self._encode = jax.jit(lambda p, x, y=None: vae.with_params(p)["encoder"](vae.encoder_input(x, y))[:2])
        self._encode_layers = jax.jit(self._encode_layers_fn)
        self._decode = jax.jit(self._decode_fn)
        self._sample = jax.jit(self._sample_fn, static_argnums=(2,))

    def _encode_layers_fn(self, params, x, y=None):
        m = self.vae.with_params(params)
        loc, scale = m["encoder"](self.vae.encoder_input(x, y))[:2]
        return tuple(t for pair in self.vae.posterior_layers(m, loc, scale) for t in pair)

    def _decode_fn(self, params, z, y=None):
        m = self.vae.with_params(params)
        return m["likelihood"].mean(m["decoder"](self.vae.decoder_input(z, y)))

    def _sample_fn(self, params, key, n, y=None):
        m = self.vae.with_params(params)
        z = prior_distribution(m["prior"], m["encoder"]).sample(key, (n,))
        # A hierarchical VAE draws ancestrally, layer i with a key folded in from the top
        # layer's (a one-layer VAE's draw is the one it always was).
        z = self.vae.top_down(m, z, lambda i, fn: fn.sample(jax.random.fold_in(key, i + 1)))
        return self._decode_fn(params, z, y)

    @property
    def device_name(self) -> str:
        """``cpu`` or ``cuda:N``, spelled as the Pyro backend spells it."""
        return "cpu" if self.device.platform == "cpu" else f"cuda:{self.device.id}"

    # -- NumPyro callables ------------------------------------------------------------------
    @property
    def model(self) -> Callable:
        """The NumPyro model ``model(x, beta=1.0, *, y=None)`` with the trained params substituted.

        ``y`` (integer labels) is required by a conditional VAE and refused otherwise.
        """
        return handlers.substitute(self.vae.model, data=self.params)

    @property
    def guide(self) -> Callable:
        """The NumPyro guide ``guide(x, beta=1.0, *, y=None)`` with the trained params substituted."""
        return handlers.substitute(self.vae.guide, data=self.params)

    # -- numpy helpers -----------------------------------------------------------------------
    def _put(self, array) -> jax.Array:
        return jax.device_put(jnp.asarray(np.asarray(array, dtype=np.float32)), self.device)

    def _labels(self, y, n: int):
        """Checked labels as a device array (conditional VAE), ``None`` otherwise."""
        y = require_labels(self.vae.num_classes, y, n)
        return None if y is None else jax.device_put(jnp.asarray(y), self.device)

    def _map(self, fn, array, y=None) -> list[np.ndarray]:
        outs = []
        for start in range(0, len(array), BATCH):
            labels = () if y is None else (y[start : start + BATCH],)
            res = fn(self.params, self._put(array[start : start + BATCH]), *labels)
            res = res if isinstance(res, tuple) else (res,)
            outs.append([np.asarray(r) for r in res])
        return [np.concatenate(parts) for parts in zip(*outs)] if outs else []

    def encode(self, x, y=None):
        if self.vae.hierarchical:  # z_1's q as the guide builds it (the ladder's combines both passes)
            return self.encode_layers(x, y)[0]
        loc, scale = self._map(self._encode, x, self._labels(y, len(x)))
        return loc, scale

    def encode_layers(self, x, y=None):
        """Every latent layer's posterior (loc, scale), z_1 first (one pair for a one-layer VAE).

        Each layer above z_1 is q(z_{l+1}|z_l) taken at the loc of the layer below. A ladder
        VAE's come from its top-down pass, each z_{l+1} taken at its loc: z_1's pair is then
        the precision-weighted one (what :meth:`encode` returns), not the encoder's alone.
        """
        flat = self._map(self._encode_layers, x, self._labels(y, len(x)))
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def decode(self, z, y=None):
        return self._map(self._decode, z, self._labels(y, len(z)))[0]

    def reconstruct(self, x, y=None):
        return self.decode(self.encode(x, y)[0], y)

    def sample(self, n: int, seed: int = 0, y=None) -> np.ndarray:
        return np.asarray(self._sample(self.params, jax.random.PRNGKey(seed), n, self._labels(y, n)))

    def evaluate(
        self,
        x: np.ndarray,
        num_samples: int = 1000,
        seed: int = 0,
        is_image: bool = False,
        batch_size: int = 100,
        y=None,
    ) -> dict:
        """The same metrics, with the same keys, as the Pyro backend's ``evaluate``."""
        xj, yj = self._put(x), self._labels(y, len(x))
        key = jax.random.PRNGKey(seed)
        t = self.evaluator.elbo_terms(self.params, xj, jax.random.fold_in(key, 0), y=yj)
        log_px = self.evaluator.log_px(
            self.params, xj, num_samples, jax.random.fold_in(key, 1), batch_size=batch_size, y=yj
        )
        return evaluation_summary(
            reconstruction=t["reconstruction"],
            kl=t["kl"],
            kl_per_dim=t["kl_per_dim"],
            loc=t["loc"],
            log_px=log_px,
            num_samples=num_samples,
            num_features=int(np.prod(x.shape[1:])),
            is_image=is_image,
            exact_log_px=exact_log_px(self.vae, self.params, x, y),
        )

    def _draws_fn(self, params, key, x, k, y=None):
        m = self.vae.with_params(params)
        z, log_q = sample_with_log_prob(self.vae.posterior(m, x, y), key, (k,))
        out = m["decoder"](self.vae.decoder_input(z, y))
        log_prior = prior_distribution(m["prior"], m["encoder"]).log_prob(z)
        return (z, m["likelihood"](out).log_prob(x), log_prior, log_q, m["likelihood"].mean(out))

    def _layered_draws_fn(self, params, key, x, k, y=None):
        """:meth:`_draws_fn` of a hierarchical VAE: z is z_1's draw, the densities those of all layers together."""
        model = handlers.substitute(self.vae.model, data=params)
        guide = handlers.substitute(self.vae.guide, data=params)
        d = log_densities(model, guide, key, x, 1.0, num_particles=k)
        m = self.vae.with_params(params)
        x_mean = m["likelihood"].mean(m["decoder"](d["z"]))
        return d["z"], d["log_lik"], d["log_prior"], d["log_q"], x_mean

    def draws(self, x: np.ndarray, num_draws: int, seed: int = 0, predictive_draws: int = 0, y=None) -> dict:
        """Draws z_s ~ q(z|x) with log p(x|z), log p(z), log q(z|x); see the Pyro backend's ``draws``."""
        xj, yj = self._put(x), self._labels(y, len(x))
        per_chunk = max(1, (2**20) // max(1, int(np.prod(x.shape))))
        fn = jax.jit(self._layered_draws_fn if self.vae.hierarchical else self._draws_fn, static_argnums=(3,))
        names = ("z", "log_lik", "log_prior", "log_q", "x_mean")
        outs: dict[str, list] = {k: [] for k in names}
        key = jax.random.PRNGKey(seed)
        for i, start in enumerate(range(0, num_draws, per_chunk)):
            parts = fn(self.params, jax.random.fold_in(key, i), xj, per_chunk, yj)
            take = min(per_chunk, num_draws - start)
            for name, part in zip(names, parts):
                if name != "x_mean":
                    outs[name].append(np.asarray(part[:take]))
                elif start < predictive_draws:
                    outs[name].append(np.asarray(part[: min(take, predictive_draws - start)]))
        result = {k: np.concatenate(v) for k, v in outs.items() if v}
        result.setdefault("x_mean", np.zeros((0, *x.shape), np.float32))
        return result

    def per_point_log_px(self, x: np.ndarray, num_samples: int, seed: int = 0, y=None) -> np.ndarray:
        return self.evaluator.log_px(
            self.params, self._put(x), num_samples, jax.random.PRNGKey(seed), y=self._labels(y, len(x))
        )


def fit(
    cfg: Config,
    dataset: Dataset,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_start: Callable[[], None] | None = None,
    on_epoch: Callable[[list], None] | None = None,
    stop_after_steps: int | None = None,
):
    """Train (or continue training) and return ``(TrainedVAE, records)``."""
    trainer_class = Trainer
    if dataset.streaming:  # data.stream: batches read from the file (.streaming)
        from ppvae.backends.numpyro.streaming import StreamingTrainer as trainer_class
    trainer = trainer_class(cfg, dataset, run_dir, progress=progress, on_epoch=on_epoch)
    if resume:
        trainer.resume()
    if on_start is not None:
        on_start()
    state = trainer.fit(stop_after_steps=stop_after_steps)
    trained = TrainedVAE(trainer.vae, trainer.params, trainer.device)
    trained.compile_seconds = trainer.compile_seconds
    return trained, state.records


def load(run_dir: Path, cfg: Config, event_shape, device: str = "auto", which: str = "last") -> TrainedVAE:
    """Rebuild a trained VAE from a run folder's ``which`` checkpoint, last or best (no unpickling)."""
    dev = resolve_device(device)
    vae = build_vae(cfg.model, event_shape, jax.random.PRNGKey(0))
    params, _, _, _ = checkpoint.load(
        checkpoint_file(run_dir, which), initial_params(vae), None, fingerprint(cfg, event_shape)
    )
    return TrainedVAE(vae, jax.device_put(params, dev), dev)
