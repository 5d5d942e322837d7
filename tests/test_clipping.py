"""Gradient clipping by global norm (train.clip_grad_norm), the same rule on both backends."""

from __future__ import annotations

import numpy as np
import pytest

import ppvae
from conftest import FAST
from ppvae.errors import UsageError
from ppvae.spec.config import TrainSpec


def _pyro_grad_norms(monkeypatch) -> list[float]:
    """The global norm of the gradient each Adam step of the next Pyro fit receives."""
    import torch

    norms: list[float] = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return norms


@pytest.mark.parametrize("clip", [0.0, 5.0])
def test_pyro_steps_see_gradients_of_at_most_the_norm(tmp_path, digits_npy, monkeypatch, clip):
    norms = _pyro_grad_norms(monkeypatch)
    ppvae.fit(
        out=tmp_path / "r",
        data=str(digits_npy),
        latent_dim=2,
        epochs=1,
        pictures=False,
        overrides={**FAST, "train.clip_grad_norm": clip},
    )
    assert len(norms) == 4
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:  # the contrast: these gradients are far above the norm unclipped
        assert min(norms) > 5.0


def test_numpyro_optimizer_rescales_the_gradient_before_adam(tmp_path, digits_npy):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import optax

    from ppvae.api import resolve_config
    from ppvae.backends.numpyro.trainer import Trainer
    from ppvae.data import load_dataset
    from ppvae.spec.config import Config

    def trainer(clip):
        cfg = resolve_config(
            Config.from_dict(
                {
                    "data": {"source": str(digits_npy)},
                    "model": {"latent_dim": 2},
                    "train": {"backend": "numpyro", "device": "cpu", "clip_grad_norm": clip, "lr": 1e-3},
                }
            )
        )
        return Trainer(cfg, load_dataset(cfg.data, "bernoulli", "unit_interval"), tmp_path, progress=False)

    clipped, plain = trainer(1.0), trainer(0.0)
    params = clipped.params
    big = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 3.0), params)  # global norm >> 1
    small = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-4), params)  # global norm < 1: untouched
    scale = 1.0 / float(optax.tree.norm(big))
    adam = optax.adam(1e-3)
    state = adam.init(params)
    want = []
    for g in (jax.tree_util.tree_map(lambda x: x * scale, big), small):
        u, state = adam.update(g, state, params)
        want.append(u)

    def updates(t):
        state, out = t.opt_state, []
        for g in (big, small):
            u, state = t.optimizer.update(g, state, params)
            out.append(u)
        return out

    for got, expect in zip(updates(clipped), want):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expect)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)
    # Without clipping the second update differs (Adam's moments saw the unscaled gradient).
    second = jax.tree_util.tree_leaves(updates(plain)[1])
    assert not all(
        np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(second, jax.tree_util.tree_leaves(want[1]))
    )


@pytest.mark.parametrize("value", [-1.0, float("inf"), "big"])
def test_a_bad_norm_is_one_line(value):
    with pytest.raises(UsageError, match="train.clip_grad_norm must be a non-negative number"):
        TrainSpec(clip_grad_norm=value)


def test_a_collapsed_posterior_gets_a_one_line_warning(tmp_path, digits_npy):
    # β = 200 drives the KL to ~0 in one epoch: the decoder learns to ignore z.
    said: list[str] = []
    run = ppvae.fit(
        out=tmp_path / "r",
        data=str(digits_npy),
        latent_dim=2,
        epochs=2,
        beta=200.0,
        pictures=False,
        overrides=FAST,
        echo=said.append,
    )
    warnings = [m for m in said if m.startswith("warning: ")]
    assert run.metrics()[-1]["kl"] < 0.1
    assert len(warnings) == 1 and "\n" not in warnings[0] and "--beta-schedule linear" in warnings[0]
    assert run.summary["warnings"] == [warnings[0].removeprefix("warning: ")]
    healthy: list[str] = []
    ok = ppvae.fit(
        out=tmp_path / "ok",
        data=str(digits_npy),
        latent_dim=2,
        epochs=2,
        pictures=False,
        overrides=FAST,
        echo=healthy.append,
    )
    assert ok.metrics()[-1]["kl"] > 0.1 and not any(m.startswith("warning: ") for m in healthy)
    assert "warnings" not in ok.summary
