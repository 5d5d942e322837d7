"""A trained VAE of the Pyro backend, spoken to in numpy: fit, load, encode, decode, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ppvae.model.conditioning import require_labels
from ppvae.spec.config import Config
from ppvae.data import Dataset
from ppvae.errors import CheckpointError
from ppvae.inference.metrics import evaluation_summary
from ppvae.backends.pyro import checkpoint
from ppvae.backends.pyro.objectives import log_densities
from ppvae.backends.pyro.evaluation import elbo_terms, exact_log_px, log_px_iwae
from ppvae.backends.pyro.model import VAE, build_vae
from ppvae.model.priors import prior_distribution
from ppvae.inference.checkpoints import checkpoint_file
from ppvae.inference.training import fingerprint
from ppvae.backends.pyro.trainer import Trainer, resolve_device

# Points per forward pass when mapping numpy arrays through the networks.
BATCH = 1000


class TrainedVAE:
    """A VAE with its weights, on a device, with numpy in and out.

    Attributes
    ----------
    vae : VAE
        The torch module; ``vae.model`` and ``vae.guide`` are the Pyro callables.
    device : torch.device
    num_classes : int
        C of a conditional VAE (methods then need labels ``y``), 0 for an unconditional one.
    """

    backend = "pyro"
    #: Seconds spent compiling before training: Pyro compiles nothing ahead of the first step.
    compile_seconds = 0.0

    def __init__(self, vae: VAE, device: torch.device):
        self.vae = vae.eval()
        self.device = device
        self.num_classes = vae.num_classes

    @property
    def device_name(self) -> str:
        """``cpu`` or ``cuda:N``."""
        return "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"

    # -- Pyro callables -------------------------------------------------------------------
    @property
    def model(self) -> Callable:
        """The Pyro model ``model(x, beta=None, *, y=None)``: usable with any ``pyro.infer`` algorithm.

        ``y`` (integer labels) is required by a conditional VAE and refused otherwise.
        """
        return self.vae.model

    @property
    def guide(self) -> Callable:
        """The Pyro guide ``guide(x, beta=None, *, y=None)``: the amortized q(z|x) (q(z|x,y))."""
        return self.vae.guide

    # -- numpy helpers ----------------------------------------------------------------------
    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def _labels(self, y, n: int) -> torch.Tensor | None:
        """Checked labels as a device tensor (conditional VAE), ``None`` otherwise."""
        y = require_labels(self.vae.num_classes, y, n)
        return None if y is None else torch.as_tensor(y, dtype=torch.long, device=self.device)

    def _map(self, fn, array: np.ndarray, y: torch.Tensor | None = None) -> list[np.ndarray]:
        outs: list[list[np.ndarray]] = []
        with torch.no_grad():
            for start in range(0, len(array), BATCH):
                labels = () if y is None else (y[start : start + BATCH],)
                res = fn(self._tensor(array[start : start + BATCH]), *labels)
                res = res if isinstance(res, tuple) else (res,)
                outs.append([r.cpu().numpy() for r in res])
        return [np.concatenate(parts) for parts in zip(*outs)] if outs else []

    def encode(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Loc and scale of the encoder's Normal (q(z|x,y) given labels when conditional), each ``(n, latent_dim)``.

        For the default ``diagonal`` guide they are q's mean and standard deviations; richer
        families (``model.guide``) add correlations or flows on top of this Normal.
        """

        def encoder(xb, yb=None):
            if self.vae.hierarchical:  # z_1's q as the guide builds it (the ladder's combines both passes)
                return self.vae.encode_layers(xb, yb)[0]
            return self.vae.encoder(self.vae.encoder_input(xb, yb))

        # (loc, scale) only: an encoder serving a richer guide family also returns its extra values.
        loc, scale = self._map(encoder, x, self._labels(y, len(x)))[:2]
        return loc, scale

    def encode_layers(self, x: np.ndarray, y: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every latent layer's posterior (loc, scale), z_1 first (one pair for a one-layer VAE)."""

        def layers(xb, yb=None):
            return tuple(t for pair in self.vae.encode_layers(xb, yb) for t in pair)

        flat = self._map(layers, x, self._labels(y, len(x)))
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def decode(self, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Mean of p(x|z) (p(x|z,y) when conditional) for latents ``z`` of shape ``(n, latent_dim)``."""
        return self._map(self.vae.decode, z, self._labels(y, len(z)))[0]

    def reconstruct(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Mean of p(x|z) at the posterior mean: the compression-and-recovery round trip."""
        return self._map(self.vae.reconstruct, x, self._labels(y, len(x)))[0]

    def sample(self, n: int, seed: int = 0, y: np.ndarray | None = None) -> np.ndarray:
        """Means of p(x|z) for ``n`` draws from the prior (seeded); ``y``: ``(n,)`` labels if conditional."""
        labels = self._labels(y, n)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.vae.sample(n, labels).cpu().numpy()

    def evaluate(
        self,
        x: np.ndarray,
        num_samples: int = 1000,
        seed: int = 0,
        is_image: bool = False,
        batch_size: int = 100,
        y: np.ndarray | None = None,
    ) -> dict:
        """Held-out metrics, per datapoint in nats (of log p(x|y) given labels ``y`` when conditional).

        Returns
        -------
        dict
            ``heldout_elbo`` (analytic KL where available, one draw), ``reconstruction``,
            ``kl``, ``heldout_log_px`` (IWAE bound with ``num_samples`` samples) and its
            standard error over points, ``num_samples``, ``active_units``, ``kl_per_dim``,
            ``bits_per_dim`` for images, ``exact_log_px`` for the linear-Gaussian model.
        """
        xt, yt = self._tensor(x), self._labels(y, len(x))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            t = elbo_terms(self.vae, xt, y=yt)
            log_px = log_px_iwae(self.vae, xt, num_samples, batch_size=batch_size, y=yt).cpu().numpy()
        exact = exact_log_px(self.vae, xt, yt)
        return evaluation_summary(
            reconstruction=t["reconstruction"].cpu().numpy(),
            kl=t["kl"].cpu().numpy(),
            kl_per_dim=t["kl_per_dim"].cpu().numpy(),
            loc=t["loc"].cpu().numpy(),
            log_px=log_px,
            num_samples=num_samples,
            num_features=int(np.prod(x.shape[1:])),
            is_image=is_image,
            exact_log_px=None if exact is None else exact.cpu().numpy(),
        )

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays by PyTorch name (for converting to another backend)."""
        return {k: v.detach().cpu().numpy() for k, v in self.vae.state_dict().items()}

    def draws(
        self, x: np.ndarray, num_draws: int, seed: int = 0, predictive_draws: int = 0, y: np.ndarray | None = None
    ) -> dict:
        """Draws z_s ~ q(z|x) for every point, with the log densities the diagnostics need.

        Returns numpy arrays: ``z`` (S, n, Z), ``log_lik`` = log p(x|z), ``log_prior`` =
        log p(z), ``log_q`` = log q(z|x), each (S, n), and ``x_mean`` (S', n, *event): the
        mean of p(x|z) for the first ``predictive_draws`` draws. ``y``: labels if conditional.
        """
        xt, yt = self._tensor(x), self._labels(y, len(x))
        if self.vae.hierarchical:
            return self._layered_draws(xt, num_draws, seed, predictive_draws, x.shape)
        devices = [self.device] if self.device.type == "cuda" else []
        outs: dict[str, list] = {"z": [], "log_lik": [], "log_prior": [], "log_q": [], "x_mean": []}
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            q = self.vae.posterior(xt, yt)
            prior = prior_distribution(self.vae.prior, self.vae.encoder)
            per_chunk = max(1, (2**20) // max(1, xt[0].numel() * len(xt)))
            for start in range(0, num_draws, per_chunk):
                z = q.sample((min(per_chunk, num_draws - start),))
                out = self.vae.decoder(self.vae.decoder_input(z, yt))
                outs["z"].append(z)
                outs["log_lik"].append(self.vae.likelihood(out).log_prob(xt))
                outs["log_prior"].append(prior.log_prob(z))
                outs["log_q"].append(q.log_prob(z))
                if start < predictive_draws:
                    outs["x_mean"].append(self.vae.likelihood.mean(out)[: predictive_draws - start])
        result = {k: torch.cat(v).cpu().numpy() for k, v in outs.items() if v}
        result.setdefault("x_mean", np.zeros((0, *x.shape), np.float32))
        return result

    def _layered_draws(self, xt, num_draws: int, seed: int, predictive_draws: int, shape) -> dict:
        """:meth:`draws` of a hierarchical VAE: z is z_1's draw, the densities those of all layers together."""
        devices = [self.device] if self.device.type == "cuda" else []
        outs: dict[str, list] = {"z": [], "log_lik": [], "log_prior": [], "log_q": [], "x_mean": []}
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            per_chunk = max(1, (2**20) // max(1, xt[0].numel() * len(xt)))
            for start in range(0, num_draws, per_chunk):
                d = log_densities(self.vae.model, self.vae.guide, xt, num_particles=min(per_chunk, num_draws - start))
                for key in ("z", "log_lik", "log_prior", "log_q"):
                    outs[key].append(d[key])
                if start < predictive_draws:
                    z = d["z"][: predictive_draws - start]
                    outs["x_mean"].append(self.vae.likelihood.mean(self.vae.decoder(z)))
        result = {k: torch.cat(v).cpu().numpy() for k, v in outs.items() if v}
        result.setdefault("x_mean", np.zeros((0, *shape), np.float32))
        return result

    def per_point_log_px(
        self, x: np.ndarray, num_samples: int, seed: int = 0, y: np.ndarray | None = None
    ) -> np.ndarray:
        """IWAE log p(x) (log p(x|y) given labels when conditional) for every row of ``x`` (float64)."""
        yt = self._labels(y, len(x))
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return log_px_iwae(self.vae, self._tensor(x), num_samples, y=yt).cpu().numpy()


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
    """Train (or continue training) and return ``(TrainedVAE, records)``.

    ``on_start`` is called once the model is built and any checkpoint has loaded, just
    before the first step; ``on_epoch`` after every epoch with the records so far.
    """
    trainer_class = Trainer
    if dataset.streaming:  # data.stream: batches read from the file (.streaming)
        from ppvae.backends.pyro.streaming import StreamingTrainer as trainer_class
    trainer = trainer_class(cfg, dataset, run_dir, progress=progress, on_epoch=on_epoch)
    if resume:
        trainer.resume()
    if on_start is not None:
        on_start()
    state = trainer.fit(stop_after_steps=stop_after_steps)
    trainer.vae.register_params = True
    return TrainedVAE(trainer.vae, trainer.device), state.records


def load(run_dir: Path, cfg: Config, event_shape, device: str = "auto", which: str = "last") -> TrainedVAE:
    """Rebuild a trained VAE from a run folder's ``which`` checkpoint, last or best (no unpickling)."""
    dev = resolve_device(device)
    vae = build_vae(cfg.model, event_shape)
    path = checkpoint_file(run_dir, which)
    model_state, _, _, _ = checkpoint.load(path, fingerprint(cfg, event_shape))
    try:
        vae.load_state_dict(model_state)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit the model in its config.toml (parameter names or "
            f"shapes differ: {checkpoint.describe_mismatch(exc)}); restore the original files or train a new run"
        ) from None
    return TrainedVAE(vae.to(dev), dev)
