"""NumPyro-backend checkpoints: params, optax state and the PRNG key as safetensors arrays.

Pytrees are stored leaf by leaf (``params.<i>``, ``optim.<i>``) with their key paths in the
meta record; loading fills a freshly built pytree of the same structure, so shapes are
checked and nothing is unpickled. See :mod:`ppvae.inference.checkpoints` for the file format.

One layout is converted at load time: before ppvae kept a portable component's arrays as
fields under their own names, it kept them in a dict (``['prior$params'].arrays['loc']``,
leaves in sorted-name order); such params are matched to today's fields by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np

from ppvae.inference.checkpoints import FILENAME, load_arrays, save_arrays
from ppvae.errors import CheckpointError

__all__ = ["FILENAME", "save", "load"]


def _leaves(tree) -> tuple[list, list[str]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [np.asarray(v) for _, v in flat], [jax.tree_util.keystr(p) for p, _ in flat]


def save(path: str | Path, *, params, opt_state, key, meta: dict) -> None:
    """Write params, optimizer state, key and ``meta`` atomically."""
    p_leaves, p_paths = _leaves(params)
    o_leaves, _ = _leaves(opt_state)
    arrays = {f"params.{i}": v for i, v in enumerate(p_leaves)}
    arrays.update({f"optim.{i}": v for i, v in enumerate(o_leaves)})
    arrays["rng.key"] = np.asarray(key)
    save_arrays(path, arrays, {**meta, "param_paths": p_paths})


#: ``.arrays['name']``: a portable component's array in the dict layout of earlier ppvae.
_LEGACY_PORTABLE = re.compile(r"\.arrays\['([A-Za-z_][A-Za-z0-9_]*)'\]")


def _saved_order(params_template, saved_paths) -> list[int] | None:
    """For each leaf of the template, the index of its saved leaf, matched by key path.

    ``None`` when the saved paths are the template's (load by index) or when they do not
    all match (the shape check then reports the mismatch).
    """
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params_template)[0]]
    if not saved_paths or list(saved_paths) == paths:
        return None
    index = {_LEGACY_PORTABLE.sub(r".\1", saved): i for i, saved in enumerate(saved_paths)}
    if set(index) != set(paths) or len(index) != len(saved_paths):
        return None
    return [index[p] for p in paths]


def _optimizer_order(opt_template, params_template, order: list[int]) -> list[int]:
    """The optimizer leaves' saved indices: each params-shaped part (Adam's moments) reordered like the params."""
    params_def = jax.tree_util.tree_structure(params_template)

    def params_shaped(node) -> bool:
        return jax.tree_util.tree_structure(node) == params_def

    out, start = [], 0
    for unit in jax.tree_util.tree_leaves(opt_template, is_leaf=params_shaped):
        if params_shaped(unit):
            out.extend(start + i for i in order)
            start += len(order)
        else:
            out.append(start)
            start += 1
    return out


def _fill(template, arrays: dict, prefix: str, path: Path, order: list[int] | None = None):
    leaves, treedef = jax.tree_util.tree_flatten(template)
    order = range(len(leaves)) if order is None else order
    loaded = [arrays.get(f"{prefix}.{i}") for i in order]
    count = sum(1 for k in arrays if k.startswith(prefix + "."))
    for i, (want, got) in enumerate(zip(leaves, loaded)):
        # safetensors stores a 0-d array as shape (1,): compare sizes for scalars.
        fits = got is not None and (tuple(np.shape(want)) == tuple(got.shape) or (np.ndim(want) == 0 and got.size == 1))
        if not fits or count != len(leaves):
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit the model in its config.toml ({prefix} array {i}: "
                f"expected shape {tuple(np.shape(want))}, got {None if got is None else tuple(got.shape)}); "
                "restore the original files or train a new run"
            )
    values = [jax.numpy.asarray(v).reshape(np.shape(w)) for v, w in zip(loaded, leaves)]
    return jax.tree_util.tree_unflatten(treedef, values)


def load(path: str | Path, params_template, opt_state_template, fingerprint: str | None = None):
    """Read a checkpoint into pytrees shaped like the templates.

    Returns
    -------
    params, opt_state, key, meta
    """
    path = Path(path)
    arrays, meta = load_arrays(path, fingerprint)
    order = _saved_order(params_template, meta.get("param_paths"))
    params = _fill(params_template, arrays, "params", path, order)
    opt_state = None
    if opt_state_template is not None:
        opt_order = None if order is None else _optimizer_order(opt_state_template, params_template, order)
        opt_state = _fill(opt_state_template, arrays, "optim", path, opt_order)
    if "rng.key" not in arrays:
        raise CheckpointError(f"checkpoint {str(path)!r} has no PRNG key; it was not written by the numpyro backend")
    return params, opt_state, jax.numpy.asarray(arrays["rng.key"]), meta
