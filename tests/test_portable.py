"""Priors and likelihoods written once (ppvae.Portable) run on both backends."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ppvae
from ppvae.spec import registry
from ppvae.errors import UsageError

from conftest import FAST


@ppvae.register("prior", "test_learned_laplace")
class LearnedLaplace(ppvae.Portable):
    """Laplace(0, b) on every latent dimension, with b learned."""

    def __init__(self, latent_dim, scale=1.0):
        self.param("log_scale", np.full(latent_dim, np.log(scale)))
        self.constant("loc", np.zeros(latent_dim))

    def distribution(self, dist, ops, p):
        return dist.Laplace(p["loc"], ops.exp(p["log_scale"])).to_event(1)


@ppvae.register("likelihood", "test_laplace")
class LaplaceLikelihood(ppvae.Portable):
    """Laplace noise around the decoder output, one learned scale per value."""

    support = "real"

    def __init__(self, event_shape, scale=0.5):
        self.event_shape = tuple(event_shape)
        self.param("log_scale", np.full(self.event_shape, np.log(scale)))

    def distribution(self, dist, ops, p, out):
        return dist.Laplace(out, ops.exp(p["log_scale"])).to_event(len(self.event_shape))

    def mean(self, dist, ops, p, out):
        return out


def test_portable_components_are_listed_for_every_backend():
    for backend in ("pyro", "numpyro"):
        comp = registry.get("prior", "test_learned_laplace", backend)
        assert comp.defaults == {"scale": 1.0}
        assert comp.description == "Laplace(0, b) on every latent dimension, with b learned."
        assert registry.get("likelihood", "test_laplace", backend).factory.support == "real"


def test_registering_a_plain_module_without_backend_is_refused():
    with pytest.raises(UsageError, match="Portable"):
        ppvae.register("prior", "nope")(object)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_one_definition_trains_on_each_backend(tmp_path, digits_npy, backend):
    pytest.importorskip("jax") if backend == "numpyro" else None
    run = ppvae.fit(
        out=tmp_path / backend,
        backend=backend,
        prior="test_learned_laplace",
        likelihood="test_laplace",
        latent_dim=2,
        epochs=2,
        data=str(digits_npy),
        pictures=False,
        overrides={**FAST, "data.binarize": "none", "data.standardize": True, "model.prior_options.scale": 0.5},
    )
    records = run.metrics()
    assert all(math.isfinite(r["heldout_elbo"]) for r in records)
    assert records[-1]["heldout_elbo"] > records[0]["heldout_elbo"] - 1.0
    from ppvae.inference.checkpoints import load_arrays

    arrays, meta = load_arrays(run.path / "checkpoint.safetensors")
    if backend == "pyro":
        log_scale, loc = arrays["model.prior.log_scale"], arrays["model.prior.loc"]
    else:
        # Each array is a field under its declared name, as in the Pyro state dict.
        prior = {p: arrays[f"params.{i}"] for i, p in enumerate(meta["param_paths"])}
        log_scale, loc = prior["['prior$params'].log_scale"], prior["['prior$params'].loc"]
    assert not np.allclose(log_scale, np.log(0.5))  # learned
    assert np.array_equal(loc, np.zeros(2, np.float32))  # constant stays put
    assert run.sample(3).shape == (3, 28, 28)


def test_both_backends_compute_the_same_portable_log_density():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import torch

    from ppvae.backends.numpyro.portable import adapt_portable as adapt_np
    from ppvae.backends.pyro.portable import adapt_portable as adapt_pt

    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    t_prior = adapt_pt("prior", LearnedLaplace)(latent_dim=3, scale=0.7)
    j_prior = adapt_np("prior", LearnedLaplace)(latent_dim=3, scale=0.7)
    a = t_prior().log_prob(torch.as_tensor(z)).detach().numpy()
    b = np.asarray(j_prior().log_prob(jnp.asarray(z)))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    jax.grad(lambda m: m().log_prob(jnp.asarray(z)).sum())(j_prior)  # differentiable


def test_two_numpyro_vaes_of_one_spec_have_interchangeable_params():
    # A portable component is static structure of its Equinox module: two builds of one spec
    # must give the same pytree structure, so params of one fit the other (as eqx.combine,
    # checkpoints and jit caching need). Settings that differ must not compare equal.
    jax = pytest.importorskip("jax")
    from ppvae.backends.numpyro.model import build_vae, initial_params
    from ppvae.spec.config import ModelSpec

    spec = ModelSpec(
        latent_dim=2,
        prior="mog",
        likelihood="normal",
        likelihood_options={"scale_mode": "per_dim"},
        encoder_options={"hidden": [4]},
        decoder_options={"hidden": [4]},
    )
    a, b = (build_vae(spec, (5,), jax.random.PRNGKey(seed)) for seed in (0, 1))
    pa, pb = initial_params(a), initial_params(b)
    assert jax.tree_util.tree_structure(pa) == jax.tree_util.tree_structure(pb)
    m = b.with_params(pa)  # a's params in b's modules
    np.testing.assert_array_equal(np.asarray(m["prior"].means), np.asarray(a.modules["prior"].means))
    other = build_vae(
        ModelSpec(
            latent_dim=2,
            prior="mog",
            likelihood="normal",
            encoder_options={"hidden": [4]},
            decoder_options={"hidden": [4]},
        ),
        (5,),
        jax.random.PRNGKey(0),
    )
    assert a.modules["likelihood"].spec != other.modules["likelihood"].spec  # per_dim vs shared scale
