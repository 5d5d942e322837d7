"""Guide families: the shape of q(z|x) built from the encoder's outputs (backend-neutral part).

An encoder returns the ``(loc, scale)`` of a diagonal Normal; a *guide family* (registry
kind ``"guide"``, chosen with ``model.guide``) turns them into the distribution of z:

- ``diagonal`` (default): ``Normal(loc, scale)`` on every dimension, the mean-field family;
- ``lowrank``: a Normal with covariance ``S (I + G G^T) S``, ``S = diag(scale)`` and ``G``
  of shape ``(latent_dim, rank)``;
- ``fullrank``: a Normal with Cholesky factor ``S (I + M)``, ``M`` strictly lower
  triangular (any covariance);
- ``iaf``: the diagonal Normal pushed through inverse autoregressive flows.

A family that needs more than loc and scale per datapoint (``F``, ``L``, the flows'
context) says how many values through its class method ``extra_outputs(latent_dim,
**settings)``; the model builder then builds the encoder with ``extra_outputs=n`` and the
encoder returns ``(loc, scale, extra)``, ``extra`` of shape ``(..., n)``. This module holds
what both backends share of the built-in families: their sizes and the validation of their
settings. Resolving the family of a spec is :func:`ppvae.spec.plan.plan_guide`.

Examples
--------
>>> lowrank_outputs(latent_dim=4, rank=2)
8
>>> fullrank_outputs(latent_dim=4)
6
"""

from __future__ import annotations

from ppvae.errors import UsageError

__all__ = ["lowrank_outputs", "fullrank_outputs", "iaf_settings", "iaf_permutation", "missing_extra"]


def missing_extra(name: str, needed: int) -> UsageError:
    """The error for an encoder that returned only (loc, scale) to a family that needs more."""
    return UsageError(
        f"guide {name!r} needs (loc, scale, extra) from the encoder with {needed} extra values "
        "per datapoint, but the encoder returned only (loc, scale); build it with "
        f'extra_outputs={needed} (ppvae\'s model builder does) or use model.guide = "diagonal"'
    )


def _positive_int(guide: str, key: str, value) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UsageError(
            f"guide {guide!r}: {key} must be a positive integer, got {value!r}; "
            f"set it with --set model.guide_options.{key}=2"
        )
    return value


def lowrank_outputs(latent_dim: int, rank: int) -> int:
    """Extra encoder outputs of the ``lowrank`` family: the ``latent_dim x rank`` factor G."""
    return latent_dim * _positive_int("lowrank", "rank", rank)


def fullrank_outputs(latent_dim: int) -> int:
    """Extra encoder outputs of the ``fullrank`` family: the strictly lower triangle of M."""
    return latent_dim * (latent_dim - 1) // 2


def iaf_settings(latent_dim: int, num_flows: int, hidden, context_dim: int) -> tuple[int, list[int], int]:
    """Validated ``(num_flows, hidden, context_dim)`` of the ``iaf`` family.

    Every hidden layer of the masked (MADE) networks needs at least ``latent_dim`` units, so
    that each output can see all the inputs that precede it.
    """
    num_flows = _positive_int("iaf", "num_flows", num_flows)
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if (
        not isinstance(hidden, (list, tuple))
        or not hidden
        or not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden)
        or min(hidden) < latent_dim
    ):
        raise UsageError(
            f"guide 'iaf': hidden must be a non-empty list of layer sizes of at least latent_dim "
            f"= {latent_dim}, got {hidden!r}; set e.g. --set model.guide_options.hidden=[{max(64, latent_dim)}]"
        )
    if not (isinstance(context_dim, int) and not isinstance(context_dim, bool) and context_dim >= 0):
        raise UsageError(
            f"guide 'iaf': context_dim must be a non-negative integer (0: flows not conditioned "
            f"on x), got {context_dim!r}"
        )
    return num_flows, list(hidden), context_dim


def iaf_permutation(latent_dim: int, index: int) -> list[int]:
    """Variable order of flow ``index``: natural for even flows, reversed for odd ones.

    Fixed rather than random so a model rebuilt from its spec (a reloaded run, a Pyro run
    converted to NumPyro) has the same autoregressive structure, and consecutive flows
    alternate which dimensions come first.
    """
    order = list(range(latent_dim))
    return order if index % 2 == 0 else order[::-1]
