"""Weights from the Pyro backend into the NumPyro backend's Equinox modules.

The Equinox networks mirror the PyTorch ones name for name, so a Pyro state dict maps
onto the JAX params mechanically; two layouts differ and are converted: a convolution's
bias is ``(C, 1, 1)`` in Equinox, and a transposed convolution's kernel is stored
``(out, in, kh, kw)`` and flipped in space relative to PyTorch's ``(in, out, kh, kw)``.
A hierarchical VAE's networks between layers, parts ``"up<l>"`` / ``"down<l>"`` here, are
entries ``l - 1`` of the Pyro VAE's ``up`` / ``down`` module lists.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ppvae.errors import CheckpointError
from ppvae.backends.numpyro.model import VAE, initial_params


# NumPyro part name -> attribute of the Pyro VAE, where they differ: the Pyro VAE's
# ``guide`` is its guide method, so the guide family lives in ``guide_family``.
_TORCH_PART = {"guide": "guide_family"}
#: ``up1``, ``down2``, ...: a network between layers, numbered from 1 here and from 0 in torch's list.
_LAYER_PART = re.compile(r"^(up|down)([1-9][0-9]*)$")


def _torch_part(part: str) -> str:
    layer = _LAYER_PART.match(part)
    if layer:
        return f"{layer.group(1)}.{int(layer.group(2)) - 1}"
    return _TORCH_PART.get(part, part)


def _torch_name(part: str, path, module=None) -> str:
    names = [_torch_part(part)]
    obj = module
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            # eqx.nn.Sequential keeps its layers in .layers, where torch's Sequential has none;
            # any other module's "layers" (a flow's masked network) is named as in torch.
            sequential = module is None or isinstance(obj, eqx.nn.Sequential)
            if not (entry.name == "layers" and sequential):
                names.append(entry.name)
            obj = None if obj is None else getattr(obj, entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            names.append(str(entry.idx))
            obj = None if obj is None else obj[entry.idx]
        else:
            names.append(str(getattr(entry, "key", entry)))
            obj = None
    return ".".join(names)


def _owner(module, path):
    obj = module
    for entry in path[:-1]:
        obj = getattr(obj, entry.name) if isinstance(entry, jax.tree_util.GetAttrKey) else obj[entry.idx]
    return obj


def params_from_torch(vae: VAE, state: dict[str, np.ndarray]) -> dict:
    """Build NumPyro params for ``vae`` from a Pyro-backend state dict (name -> array)."""
    params = initial_params(vae)
    out = {}
    for site, tree in params.items():
        part = site.split("$")[0]
        module = vae.modules[part]
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        leaves = []
        for path, leaf in flat:
            name = _torch_name(part, path, module)
            if name not in state:
                raise CheckpointError(f"the Pyro weights have no {name!r}; were they written for the same spec?")
            value = np.asarray(state[name])
            owner = _owner(module, path)
            if isinstance(owner, eqx.nn.ConvTranspose2d) and path[-1].name == "weight":
                value = np.flip(np.transpose(value, (1, 0, 2, 3)), axis=(2, 3))
            value = value.reshape(np.shape(leaf))
            leaves.append(jnp.asarray(value, dtype=leaf.dtype))
        out[site] = jax.tree_util.tree_unflatten(treedef, leaves)
    return out


def jax_view(cfg, event_shape, trained) -> tuple[VAE, dict]:
    """A trained run of either backend as a NumPyro VAE and its params.

    NumPyro runs are returned as they are; Pyro runs are rebuilt from the same spec and
    their weights converted with :func:`params_from_torch`.
    """
    if getattr(trained, "backend", None) == "numpyro":
        return trained.vae, trained.params
    from ppvae.backends.numpyro.model import build_vae

    vae = build_vae(cfg.model, tuple(event_shape), jax.random.PRNGKey(0))
    return vae, params_from_torch(vae, trained.state_arrays())
