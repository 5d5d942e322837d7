"""The VAE as a Pyro model/guide pair, following the ppvae model contract.

- Sample sites ``"z"`` (latent) and ``"x"`` (observed) sit in one plate ``"data"`` whose
  size is the full dataset, so a minibatch objective is scaled to the whole dataset.
- β weights the KL through ``poutine.scale(scale=beta)`` around ``"z"`` in **both** the
  model and the guide, so the objective is ``reconstruction + β·KL`` (wrapping only the
  model's site would give ``β·log p(z) - log q(z|x)``, which is not β·KL).
- With stochastic layers above z (``model.latent_layers``, :mod:`ppvae.model.hierarchy`)
  the sites are ``"z1"`` ... ``"zL"``: the model p(z_L) p(z_{L-1}|z_L) ... p(x|z_1), the
  guide bottom-up q(z_1|x) q(z_2|z_1) ..., every latent site inside the β scale in both.
  The pieces below keep their meaning for z_1: ``posterior`` is q(z_1|x), ``decode`` maps
  z_1, ``latent_dim`` is the size of z_1.

``model`` and ``guide`` are ordinary Pyro callables: pass them to ``pyro.infer.SVI``,
``Predictive`` or ``Importance``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ppvae.model.conditioning import LabelledInputs
from ppvae.model.hierarchy import latent_sites, precision_weighted
from ppvae.spec.config import ModelSpec
from ppvae.spec.plan import build_parts
from ppvae.backends.pyro import conditioning
from ppvae.backends.pyro.guides import DiagonalGuide
from ppvae.model.priors import prior_distribution, uses_encoder

BACKEND = "pyro"


class VAE(nn.Module, LabelledInputs):
    """A VAE built from registered components.

    Parameters
    ----------
    prior, likelihood, encoder, decoder : torch.nn.Module
        Components (see :mod:`ppvae.spec.registry`).
    event_shape : tuple of int
        Shape of one datapoint.
    latent_dim : int
        Size of z.
    dataset_size : int, optional
        Full dataset size N; a minibatch of B points is scaled by N / B. Defaults to the
        batch size (no scaling).
    register_params : bool
        Register the networks' parameters with Pyro's param store inside ``model`` and
        ``guide`` (``pyro.module``), as ``pyro.infer.SVI`` with a ``pyro.optim`` optimizer
        needs. ppvae's own trainer optimizes ``self.parameters()`` directly and turns this
        off to skip the param-store round trip on every step.
    num_classes : int
        ``C > 0`` makes a conditional VAE p(z) p(x|z,y), q(z|x,y): ``model`` and ``guide``
        then require integer labels ``y`` and the encoder and decoder receive ``one_hot(y)``
        (built for the enlarged inputs by :func:`build_vae`). ``0``: unconditional.
    label_layout : {"flat", "channels"}
        How the label is attached to x for the encoder (see :mod:`ppvae.model.conditioning`).
    guide_family : torch.nn.Module, optional
        The family of q(z|x) (registry kind ``"guide"``): called with the encoder's
        outputs ``(loc, scale[, extra])``, it returns the distribution of z. Defaults to
        the diagonal Normal. Kept as ``vae.guide_family`` (``vae.guide`` is the guide).
    up, down : list of torch.nn.Module, optional
        A hierarchical VAE's networks between consecutive layers (z_l, z_{l+1}): the
        (loc, scale) of q(z_{l+1}|z_l) and of p(z_l|z_{l+1}). ``prior`` is then p(z_L).
    inference : {"bottom_up", "ladder"}
        A hierarchical VAE's guide: q(z_1|x) q(z_2|z_1) ..., or the ladder's top-down
        q(z_L|x) ... q(z_1|z_2, x) (see :mod:`ppvae.model.hierarchy`).

    Examples
    --------
    >>> import pyro, torch
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> from ppvae.spec.config import ModelSpec
    >>> vae = build_vae(ModelSpec(latent_dim=2), event_shape=(4,), support_check=False)
    >>> svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    >>> loss = svi.step(torch.rand(8, 4).round())
    """

    labels = conditioning

    def __init__(
        self,
        prior: nn.Module,
        likelihood: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        event_shape,
        latent_dim: int,
        dataset_size: int | None = None,
        register_params: bool = True,
        num_classes: int = 0,
        label_layout: str = "flat",
        guide_family: nn.Module | None = None,
        up=(),
        down=(),
        inference: str = "bottom_up",
    ):
        super().__init__()
        self.prior = prior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        # Registered after the other parts, so their parameters keep their order (and the
        # optimizer state of a checkpoint its indices).
        self.guide_family = DiagonalGuide(latent_dim) if guide_family is None else guide_family
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.dataset_size = dataset_size
        self.register_params = register_params
        self.num_classes = int(num_classes)
        self.label_layout = label_layout
        self.beta = 1.0
        if len(up) != len(down):
            raise ValueError(
                f"a hierarchical VAE needs one up and one down network per pair of layers, got {len(up)} and {len(down)}"
            )
        # Only a hierarchical VAE holds these: a one-layer VAE's state dict keeps its keys.
        if up:
            self.up = nn.ModuleList(up)
            self.down = nn.ModuleList(down)
        #: The latent sites, z_1 first: ``("z",)`` for one layer.
        self.sites = latent_sites(len(up) + 1)
        #: The guide's order of a hierarchical VAE: ``"bottom_up"`` or ``"ladder"``.
        self.inference = inference

    @property
    def hierarchical(self) -> bool:
        """Whether the VAE has stochastic layers above z (sites ``"z1"`` ... ``"zL"``)."""
        return len(self.sites) > 1

    @staticmethod
    def _layer(net: nn.Module, z: torch.Tensor) -> dist.Distribution:
        loc, scale = net(z)[:2]
        return dist.Normal(loc, scale).to_event(1)

    def top_down(self, z_top: torch.Tensor, site=None) -> torch.Tensor:
        """z_1 from a draw of the top layer: each layer below drawn from p(z_l|z_{l+1}).

        ``site(name, distribution)`` draws a layer (``pyro.sample`` inside the model); by
        default each distribution is sampled directly. The identity for one layer.
        """
        site = site or (lambda name, fn: fn.sample())
        z = z_top
        for i in reversed(range(len(self.sites) - 1)):
            z = site(self.sites[i], self._layer(self.down[i], z))
        return z

    # -- pieces (the label handling comes from LabelledInputs) ---------------------------------
    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """The amortized q(z|x) (q(z|x,y) when conditional): the guide family of the encoder's outputs."""
        return self.guide_family(*self.encoder(self.encoder_input(x, y)))

    def observation(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """p(x|z) (p(x|z,y) when conditional) for a batch of latents."""
        return self.likelihood(self.decoder(self.decoder_input(z, y)))

    def _plate(self, x: torch.Tensor):
        batch = x.shape[0]
        size = self.dataset_size or batch
        # An explicit subsample of the batch rows: the plate scales by size / batch
        # without drawing random indices of its own.
        return pyro.plate("data", size=size, subsample=torch.arange(batch, device=x.device), dim=-1)

    # -- the probabilistic program ------------------------------------------------------------
    def model(
        self, x: torch.Tensor, beta: float | torch.Tensor | None = None, *, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """p(z) p(x|z) (p(x|z,y) given labels ``y`` when conditional), β around ``"z"``."""
        self.check_labels(y)
        beta = self.beta if beta is None else beta
        if self.register_params:
            pyro.module("ppvae_decoder", self.decoder)
            pyro.module("ppvae_likelihood", self.likelihood)
            pyro.module("ppvae_prior", self.prior)
            if uses_encoder(self.prior):  # the VampPrior shares the encoder's weights
                pyro.module("ppvae_encoder", self.encoder)
            if self.hierarchical:
                pyro.module("ppvae_down", self.down)
        with self._plate(x):
            with poutine.scale(scale=beta):
                z = pyro.sample(self.sites[-1], prior_distribution(self.prior, self.encoder))
                z = self.top_down(z, pyro.sample)
            pyro.sample("x", self.observation(z, y), obs=x)
        return z

    def guide(
        self, x: torch.Tensor, beta: float | torch.Tensor | None = None, *, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q(z|x) (q(z|x,y) when conditional): the amortized encoder, β around ``"z"`` as in the model."""
        self.check_labels(y)
        beta = self.beta if beta is None else beta
        if self.register_params:
            pyro.module("ppvae_encoder", self.encoder)
            if any(True for _ in self.guide_family.parameters()):
                pyro.module("ppvae_guide", self.guide_family)
            if self.hierarchical:
                pyro.module("ppvae_up", self.up)
                if self.inference == "ladder":  # the top-down pass is the model's own
                    pyro.module("ppvae_down", self.down)
        with self._plate(x):
            if self.hierarchical and self.inference == "ladder":
                with poutine.scale(scale=beta):
                    return self._ladder_layers(x, y, pyro.sample)[1]
            q = self.posterior(x, y)
            with poutine.scale(scale=beta):
                z = first = pyro.sample(self.sites[0], q)
                for i in range(len(self.sites) - 1):  # bottom-up: q(z_{l+1} | z_l)
                    z = pyro.sample(self.sites[i + 1], self._layer(self.up[i], z))
                return first

    def _bottom_up_pass(self, x: torch.Tensor, y=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The deterministic (loc, scale) of every layer: the encoder's, then each up network at the loc below."""
        loc, scale = self.encoder(self.encoder_input(x, y))[:2]
        out = [(loc, scale)]
        for net in getattr(self, "up", ()):
            loc, scale = net(loc)[:2]
            out.append((loc, scale))
        return out

    def _ladder_layers(self, x: torch.Tensor, y=None, site=None) -> tuple[list, torch.Tensor]:
        """The ladder guide's layers top-down: z_L from the bottom-up pass, then each z_l from the
        precision-weighted combination of its bottom-up Normal with p(z_l|z_{l+1}).

        ``site(name, distribution)`` draws a layer (``pyro.sample`` in the guide); without it
        each layer is taken at its loc. Returns every layer's (loc, scale), z_1 first, and z_1.
        """
        estimates = self._bottom_up_pass(x, y)
        loc, scale = estimates[-1]
        layers = [(loc, scale)]
        z = site(self.sites[-1], dist.Normal(loc, scale).to_event(1)) if site else loc
        for i in reversed(range(len(self.sites) - 1)):
            prior_loc, prior_scale = self.down[i](z)[:2]
            loc, scale = precision_weighted(*estimates[i], prior_loc, prior_scale, torch.sqrt)
            layers.insert(0, (loc, scale))
            z = site(self.sites[i], dist.Normal(loc, scale).to_event(1)) if site else loc
        return layers, z

    # -- everyday uses -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Means of p(x|z) (p(x|z,y) for labels ``y`` of shape ``(n,)``) for ``n`` draws z ~ p(z).

        A hierarchical VAE draws ancestrally: z_L ~ p(z_L), ..., z_1 ~ p(z_1|z_2).
        """
        self.check_labels(y)
        z = prior_distribution(self.prior, self.encoder).sample((n,))
        return self.decode(self.top_down(z), y)

    @torch.no_grad()
    def encode_layers(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's posterior (loc, scale), z_1 first.

        Bottom-up, each layer above is q(z_{l+1}|z_l) at the loc of the one below; for the
        ladder, each layer below is q(z_l|z_{l+1}, x) at the loc of the one above.
        """
        self.check_labels(y)
        if self.hierarchical and self.inference == "ladder":
            return self._ladder_layers(x, y)[0]
        return self._bottom_up_pass(x, y)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) (p(x|z,y) when conditional) for given latents."""
        self.check_labels(y)
        return self.likelihood.mean(self.decoder(self.decoder_input(z, y)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) at the encoder's loc (labels ``y`` for both when conditional).

        The loc is the posterior mean for the Gaussian guide families; for ``iaf`` it is the
        mean of the Normal the flows transform.
        """
        self.check_labels(y)
        if self.hierarchical:  # z_1's loc as the guide has it (the ladder's combines both passes)
            return self.decode(self.encode_layers(x, y)[0][0], y)
        loc = self.encoder(self.encoder_input(x, y))[0]
        return self.decode(loc, y)


def build_vae(
    spec: ModelSpec,
    event_shape,
    dataset_size: int | None = None,
    register_params: bool = True,
    support_check: bool = True,
) -> VAE:
    """Build a :class:`VAE` from a :class:`~ppvae.spec.config.ModelSpec` (see :func:`ppvae.spec.plan.build_parts`).

    Component names and settings are validated against the registry; unknown ones raise
    :class:`~ppvae.errors.UsageError` listing the valid choices. A conditional spec
    (``spec.conditional``, ``spec.num_classes`` resolved) gets a decoder with
    ``latent_dim + num_classes`` inputs and an encoder for x with the label attached.
    """
    parts = build_parts(spec, event_shape, BACKEND)
    return VAE(
        parts.prior,
        parts.likelihood,
        parts.encoder,
        parts.decoder,
        event_shape,
        spec.latent_dim,
        dataset_size=dataset_size,
        register_params=register_params,
        num_classes=parts.num_classes,
        label_layout=parts.label_layout,
        guide_family=parts.guide_family,
        up=parts.up,
        down=parts.down,
        inference=parts.layers.inference,
    )
