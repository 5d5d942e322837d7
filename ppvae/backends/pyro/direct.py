"""The training step's sites of ppvae's own model/guide pair, without Pyro's trace machinery.

:func:`~ppvae.backends.pyro.objectives.terms` needs, for the sites ``"z"`` and ``"x"``,
each site's distribution (as the plates broadcast it), its value and its scale. Pyro's
``trace`` + ``replay`` of the guide and the model produce them by sending every
``pyro.sample`` through the handler stack (trace, replay, the ``"data"`` and
``"particles"`` plates, ``scale``): on CPU about 0.7 ms per step, 5-6 % of the reference
network's training step (``bench/RESULTS.md``). For a :class:`~ppvae.backends.pyro.model.VAE`
built by ppvae (not a subclass), called with nothing but ``x``, ``beta`` and ``y`` and with
no Pyro handler active, the sites are known in advance: this module computes them
directly, with the same calls in the same order (so the same random draws), the same
``expand`` the plates apply and the same scale arithmetic. The values and gradients are
those of the trace path (``tests/test_pyro_direct.py`` compares both); anything else
(a subclass, a user's own model or guide, an active handler such as ``SVI``'s param
capture or ``poutine.condition``, a non-Pyro distribution, registered params, an invalid
β) returns ``None`` and the caller takes the trace path.
"""

from __future__ import annotations

import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.poutine.runtime import _PYRO_STACK

from ppvae.backends.pyro.model import VAE
from ppvae.model.priors import prior_distribution

__all__ = ["direct_traces"]


class _Sites:
    """What ``terms`` reads of a trace: ``nodes[name]`` with ``fn``, ``value`` and ``scale``."""

    __slots__ = ("nodes",)

    def __init__(self, **nodes):
        self.nodes = nodes


def _expand(fn, plates):
    actual = tuple(fn.batch_shape)
    target: list = [None if size == 1 else size for size in actual]
    for dim, size in plates:
        target = [None] * (-dim - len(target)) + target
        if target[dim] is not None and target[dim] != size:
            return None
        target[dim] = size
    for i in range(-len(target) + 1, 1):
        if target[i] is None:
            target[i] = actual[i] if len(actual) >= -i else 1
    expanded = fn.expand(target)
    if expanded.has_rsample != fn.has_rsample:
        expanded.has_rsample = fn.has_rsample
    return expanded


def _broadcast(fn, plates: tuple[tuple[int, int], ...]):
    """``fn`` expanded to the plates' batch shape, as Pyro's plates do it: each plate, from
    the innermost out, expands to the shape of the plates seen so far.

    ``plates`` holds ``(dim, size)`` per plate, innermost first. ``None`` where a plate's size
    contradicts the distribution's batch shape (the trace path then raises Pyro's error).
    """
    for i in range(len(plates)):
        fn = _expand(fn, plates[: i + 1])
        if fn is None:
            return None
    return fn


def _scale(scale, size: int, batch: int, particles: int):
    """The site's scale, with the arithmetic (and its rounding) of the plates' handlers."""
    scale = scale * 1.0
    scale = scale * size / batch
    if particles > 1:
        scale = scale * particles / particles
    return scale


def direct_traces(model, guide, args: tuple, kwargs: dict, num_particles: int):
    """``(model_sites, guide_sites)`` for ppvae's own VAE, or ``None`` where traces are needed.

    Parameters
    ----------
    model, guide : callable
        The pair given to ``terms``; only ``vae.model`` and ``vae.guide`` of one plain
        :class:`~ppvae.backends.pyro.model.VAE` qualify.
    args, kwargs : tuple, dict
        Their arguments: ``(x,)`` and optionally ``beta`` and ``y``.
    num_particles : int
        K, the outer ``"particles"`` plate (dim -2) when above 1.
    """
    vae = getattr(model, "__self__", None)
    if (
        type(vae) is not VAE
        or getattr(guide, "__self__", None) is not vae
        or getattr(model, "__func__", None) is not VAE.model
        or getattr(guide, "__func__", None) is not VAE.guide
        or vae.register_params
        or vae.hierarchical
        or _PYRO_STACK
        or len(args) != 1
        or not set(kwargs) <= {"beta", "y"}
    ):
        return None
    x = args[0]
    beta = kwargs.get("beta")
    beta = vae.beta if beta is None else beta
    if torch.is_tensor(beta) or not beta > 0:  # let the scale handler judge (and refuse) these
        return None
    y = kwargs.get("y")
    vae.check_labels(y)
    batch = x.shape[0]
    size = vae.dataset_size or batch
    # The plates as the trace path stacks them: "data" (dim -1), then "particles" (dim -2).
    plates = ((-1, batch), (-2, num_particles)) if num_particles > 1 else ((-1, batch),)
    # The guide: q(z|x), then its draw (as pyro.sample calls a distribution).
    q = vae.posterior(x, y)
    q = _broadcast(q, plates) if isinstance(q, TorchDistributionMixin) else None
    if q is None:
        return None
    z = q()
    # The model replayed on that draw: p(z), then p(x|z) observed at x.
    p = prior_distribution(vae.prior, vae.encoder)
    p = _broadcast(p, plates) if isinstance(p, TorchDistributionMixin) else None
    if p is None:
        return None
    px = vae.observation(z, y)
    px = _broadcast(px, plates) if isinstance(px, TorchDistributionMixin) else None
    if px is None:
        return None
    z_scale = _scale(beta, size, batch, num_particles)
    guide_sites = _Sites(z={"fn": q, "value": z, "scale": z_scale})
    model_sites = _Sites(
        z={"fn": p, "value": z, "scale": z_scale},
        x={"fn": px, "value": x, "scale": _scale(1.0, size, batch, num_particles)},
    )
    return model_sites, guide_sites
