"""The VampPrior for the Pyro backend.

The priors of fixed form are written once, in :mod:`ppvae.model.priors`. The VampPrior
stays here because it passes its pseudo-inputs through the VAE's own encoder, a PyTorch
network; it is called ``prior(encoder)`` (class attribute ``uses_encoder``), and
:func:`ppvae.model.priors.prior_distribution` makes the right call for any prior.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppvae.model import settings
from ppvae.spec.registry import register

__all__ = ["VampPrior"]

BACKEND = "pyro"


@register("prior", "vamp", backend=BACKEND)
class VampPrior(nn.Module):
    """VampPrior: p(z) = 1/K sum_k q(z|u_k), a mixture of the encoder's posteriors at K learned pseudo-inputs.

    Parameters
    ----------
    latent_dim : int
        Size of z.
    event_shape : tuple of int
        Shape of one datapoint (and of one pseudo-input).
    num_components : int, default 50
        K, the number of pseudo-inputs.
    data_support : {"auto", "unit_interval", "real", "count"}, default "auto"
        Where the pseudo-inputs live. ``"auto"`` takes the likelihood's support (the model
        builder resolves it). For ``"unit_interval"`` a pseudo-input is ``sigmoid(raw)``, so
        it stays in [0, 1] like the data; for ``"count"`` it is ``softplus(raw)`` (>= 0);
        for ``"real"`` it is ``raw`` itself.

    Notes
    -----
    The prior holds only the raw pseudo-inputs ``raw_inputs`` (K, *event_shape); it is
    called as ``prior(encoder)`` with the VAE's encoder, so the encoder's weights are
    shared (gradients of log p(z) reach them) and never copied. The mixture components
    are the encoder's diagonal Normals N(loc(u_k), scale(u_k)), whichever guide family
    the VAE uses. A conditional VAE cannot use it (its encoder also needs a label).
    """

    uses_encoder = True

    def __init__(self, latent_dim, event_shape, num_components=50, data_support="auto"):
        super().__init__()
        settings.count("prior", "vamp", "num_components", num_components)
        self.data_support = settings.pseudo_input_support(data_support)
        self.latent_dim = int(latent_dim)
        # raw ~ N(0, 1): sigmoid(raw) spreads over mid-grey images, different for every u_k.
        self.raw_inputs = nn.Parameter(torch.randn(int(num_components), *tuple(event_shape)))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_k in the data's space, shape (K, *event_shape)."""
        if self.data_support == "unit_interval":
            return torch.sigmoid(self.raw_inputs)
        if self.data_support == "count":
            return F.softplus(self.raw_inputs)
        return self.raw_inputs

    def forward(self, encoder: nn.Module) -> dist.Distribution:
        # The encoder's diagonal Normal at each u_k; outputs a guide family asked for
        # beyond loc and scale (low-rank factors, flow context) are not used.
        loc, scale = encoder(self.pseudo_inputs)[:2]
        weights = torch.zeros(loc.shape[0], dtype=loc.dtype, device=loc.device)  # uniform 1/K
        return dist.MixtureSameFamily(dist.Categorical(logits=weights), dist.Normal(loc, scale).to_event(1))
