"""The IWAE bound with doubly-reparameterized gradients (``dreg``) on both backends.

DReG keeps the IWAE bound's value and changes only its gradient: the guide's parameters get
``sum_k c_k dlog w_k/dz_k dz_k/dphi`` with log q at stopped guide parameters and
``c_k = (1 - β) w~_k + β w~_k^2`` (``w~_k^2`` at β = 1), every other parameter the plain IWAE
gradient ``sum_k w~_k grad log w_k``. The tests compare the estimators' values on the same
draws, their gradients against a direct computation of that formula on fixed noise, the two
backends on copied weights, and the variance of the guide's gradient against IWAE's.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from ppvae.backends import pyro as pb
from ppvae.spec.config import ModelSpec

from conftest import FAST

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")

import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as ndist  # noqa: E402
from numpyro import handlers  # noqa: E402
from numpyro.primitives import Messenger as NumPyroMessenger  # noqa: E402

from ppvae.backends import numpyro as npb  # noqa: E402

N_DATA = 1000  # dataset size the "data" plate scales to
SHAPE = (6, 5)
LATENT = 3
SPEC = ModelSpec(latent_dim=LATENT, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]})


def binary_batch(batch=8, seed=0):
    return (np.random.default_rng(seed).random((batch, *SHAPE)) < 0.4).astype(np.float32)


def pair():
    """A Pyro VAE with perturbed weights, and the NumPyro VAE with the same weights copied over."""
    torch.manual_seed(0)
    tvae = pb.build_vae(SPEC, SHAPE, dataset_size=N_DATA, register_params=False)
    with torch.no_grad():  # move biases and scales off their trivial initial values
        for p in tvae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    jvae = npb.build_vae(SPEC, SHAPE, jax.random.PRNGKey(0), dataset_size=N_DATA)
    params = npb.params_from_torch(jvae, {k: v.detach().numpy() for k, v in tvae.state_dict().items()})
    return tvae, jvae, params


def seeded(fn, seed=7):
    torch.manual_seed(seed)
    return fn()


# --------------------------------------------------------------------------- fixed noise
def _normal(fn):
    while not hasattr(fn, "loc"):  # Independent / ExpandedDistribution around the Normal
        fn = fn.base_dist
    return fn


class FixedNoise(Messenger):
    """The guide's ``z`` is drawn as ``loc + scale * eps`` with given ``eps`` (still reparameterized)."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        if msg["name"] == "z" and not msg["is_observed"] and msg["value"] is None:
            normal = _normal(msg["fn"])
            msg["value"] = normal.loc + normal.scale * self.eps


class JaxFixedNoise(NumPyroMessenger):
    """The same for NumPyro."""

    def __init__(self, fn, eps):
        self.eps = eps
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == "z" and not msg["is_observed"] and msg["value"] is None:
            normal = _normal(msg["fn"])
            msg["value"] = normal.loc + normal.scale * self.eps


def torch_terms(vae, x, eps, estimator, beta):
    guide = FixedNoise(torch.as_tensor(eps))(vae.guide)
    return pb.terms(vae.model, guide, torch.as_tensor(x), beta=beta, estimator=estimator, num_particles=len(eps))


def jax_terms(vae, params, x, eps, estimator, beta):
    model = handlers.substitute(vae.model, data=params)
    guide = JaxFixedNoise(handlers.substitute(vae.guide, data=params), jnp.asarray(eps))
    return npb.terms(
        model, guide, jax.random.PRNGKey(0), jnp.asarray(x), beta, estimator=estimator, num_particles=len(eps)
    )


def torch_grads(vae, loss) -> dict[str, np.ndarray]:
    vae.zero_grad(set_to_none=False)
    loss.backward()
    return {name: p.grad.detach().numpy().copy() for name, p in vae.named_parameters()}


def dreg_weights(w, beta):
    return (1.0 - beta) * w + beta * w**2


# ------------------------------------------------------------------------------ values
@pytest.mark.parametrize("K,beta", [(1, 1.0), (5, 0.5)])
def test_pyro_dreg_value_is_the_iwae_value_on_the_same_draws(K, beta):
    tvae, _, _ = pair()
    x = torch.as_tensor(binary_batch())
    iwae = seeded(lambda: pb.terms(tvae.model, tvae.guide, x, beta=beta, estimator="iwae", num_particles=K))
    dreg = seeded(lambda: pb.terms(tvae.model, tvae.guide, x, beta=beta, estimator="dreg", num_particles=K))
    for name in ("loss", "reconstruction", "kl"):
        assert torch.equal(getattr(dreg, name), getattr(iwae, name)), name
    if K == 1:
        elbo = seeded(lambda: pb.terms(tvae.model, tvae.guide, x, beta=beta, estimator="trace"))
        assert torch.equal(dreg.loss, elbo.loss)
    objective = pb.VAEObjective("dreg", num_particles=K)
    svi_loss = seeded(lambda: objective.loss(tvae.model, tvae.guide, x, beta=beta))  # no_grad: no hook
    assert svi_loss == pytest.approx(iwae.loss.item() * iwae.batch * iwae.data_scale, rel=1e-6)


def test_numpyro_dreg_value_is_the_iwae_value_on_the_same_draws():
    _, jvae, params = pair()
    x = jnp.asarray(binary_batch())
    key = jax.random.PRNGKey(3)

    def run(p, estimator, K, beta):
        return npb.terms(
            handlers.substitute(jvae.model, data=p),
            handlers.substitute(jvae.guide, data=p),
            key,
            x,
            beta,
            estimator=estimator,
            num_particles=K,
        )

    for K, beta in ((1, 1.0), (5, 0.5)):
        iwae, dreg = run(params, "iwae", K, beta), run(params, "dreg", K, beta)
        for name in ("loss", "reconstruction", "kl"):
            assert float(getattr(dreg, name)) == float(getattr(iwae, name)), (name, K)
        if K == 1:
            assert float(dreg.loss) == float(run(params, "trace", K, beta).loss)
    # Compiled and through the gradient transform, the value is still the IWAE bound.
    value = jax.jit(jax.value_and_grad(lambda p: run(p, "dreg", K, beta).loss))(params)[0]
    assert float(value) == pytest.approx(float(iwae.loss), rel=1e-6)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_pyro_dreg_gradients_are_the_dreg_formula(beta):
    """Guide: autograd of -mean sum_k stop(c_k) log w_k(z_k(phi)), log q at stopped params.
    Model: the plain IWAE gradient. Fixed noise, so both sides see the same draws."""
    tvae, _, _ = pair()
    x, K = binary_batch(), 6
    eps = np.random.default_rng(1).normal(size=(K, len(x), LATENT)).astype(np.float32)
    ours = torch_grads(tvae, torch_terms(tvae, x, eps, "dreg", beta).loss)
    iwae = torch_grads(tvae, torch_terms(tvae, x, eps, "iwae", beta).loss)

    # The formula by hand, on the same traces, with explicit weights instead of a hook.
    xt = torch.as_tensor(x)
    guide = pyro.plate("particles", K, dim=-2)(FixedNoise(torch.as_tensor(eps))(tvae.guide))
    model = pyro.plate("particles", K, dim=-2)(tvae.model)
    g_tr = poutine.trace(guide).get_trace(xt, beta=beta)
    m_tr = poutine.trace(poutine.replay(model, trace=g_tr)).get_trace(xt, beta=beta)
    z, normal = g_tr.nodes["z"]["value"], _normal(g_tr.nodes["z"]["fn"])
    q_stopped = pyro.distributions.Normal(normal.loc.detach(), normal.scale.detach()).to_event(1)
    log_w = m_tr.nodes["x"]["fn"].log_prob(xt) + beta * (m_tr.nodes["z"]["fn"].log_prob(z) - q_stopped.log_prob(z))
    w = torch.softmax(log_w.detach(), 0)
    surrogate = -(dreg_weights(w, beta) * log_w).sum(0).mean()
    names = [n for n, _ in tvae.named_parameters() if n.startswith("encoder.")]
    hand = torch.autograd.grad(surrogate, [dict(tvae.named_parameters())[n] for n in names])
    assert names and set(ours) - set(names)
    for name, g in zip(names, hand):
        # float32 sums taken in another order: agreement to ~1e-7 of gradients of order 0.1.
        np.testing.assert_allclose(ours[name], g.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
        assert np.abs(ours[name] - iwae[name]).max() > 1e-4, name  # and it is not IWAE's gradient
    for name in set(ours) - set(names):
        np.testing.assert_allclose(ours[name], iwae[name], rtol=1e-4, atol=1e-6, err_msg=name)


def _jax_grads(jvae, params, x, eps, estimator, beta):
    return jax.grad(lambda p: jax_terms(jvae, p, x, eps, estimator, beta).loss)(params)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_numpyro_dreg_gradients_are_the_dreg_formula(beta):
    _, jvae, params = pair()
    x, K = binary_batch(), 6
    eps = np.random.default_rng(1).normal(size=(K, len(x), LATENT)).astype(np.float32)
    ours = _jax_grads(jvae, params, x, eps, "dreg", beta)
    iwae = _jax_grads(jvae, params, x, eps, "iwae", beta)

    def surrogate(encoder_params):
        p = {**params, "encoder$params": encoder_params}
        xj = jnp.asarray(x)

        def guide(x):
            with numpyro.plate("particles", K, dim=-2):
                return JaxFixedNoise(handlers.substitute(jvae.guide, data=p), jnp.asarray(eps))(x, beta)

        def model(x):
            with numpyro.plate("particles", K, dim=-2):
                return handlers.substitute(jvae.model, data=p)(x, beta)

        g_tr = handlers.trace(handlers.seed(guide, 0)).get_trace(xj)
        m_tr = handlers.trace(handlers.replay(handlers.seed(model, 1), g_tr)).get_trace(xj)
        z, normal = g_tr["z"]["value"], _normal(g_tr["z"]["fn"])
        q_stopped = ndist.Normal(jax.lax.stop_gradient(normal.loc), jax.lax.stop_gradient(normal.scale)).to_event(1)
        log_w = m_tr["x"]["fn"].log_prob(xj) + beta * (m_tr["z"]["fn"].log_prob(z) - q_stopped.log_prob(z))
        w = jax.nn.softmax(jax.lax.stop_gradient(log_w), 0)
        return -(dreg_weights(w, beta) * log_w).sum(0).mean()

    hand = jax.grad(surrogate)(params["encoder$params"])
    leaves = lambda tree: jax.tree_util.tree_leaves(tree)  # noqa: E731
    for a, b, c in zip(leaves(ours["encoder$params"]), leaves(hand), leaves(iwae["encoder$params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4
    rest = [k for k in params if k != "encoder$params"]
    assert rest
    for k in rest:
        for a, b in zip(leaves(ours[k]), leaves(iwae[k])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_torch_and_jax_dreg_gradients_agree_on_copied_weights(beta):
    tvae, jvae, params = pair()
    x, K = binary_batch(), 6
    eps = np.random.default_rng(2).normal(size=(K, len(x), LATENT)).astype(np.float32)
    t_loss = torch_terms(tvae, x, eps, "dreg", beta).loss
    j_terms = jax_terms(jvae, params, x, eps, "dreg", beta)
    assert t_loss.item() == pytest.approx(float(j_terms.loss), rel=1e-5)
    t_grads = torch_grads(tvae, t_loss)
    state = {k: t_grads.get(k, np.zeros(v.shape, np.float32)) for k, v in tvae.state_dict().items()}
    expected = npb.params_from_torch(jvae, state)  # the torch gradients in the JAX layout
    ours = _jax_grads(jvae, params, x, eps, "dreg", beta)
    trained = {n.split(".")[0] for n in t_grads}
    compared = 0
    for key in params:
        if key.split("$")[0] not in trained:
            continue
        for a, b in zip(jax.tree_util.tree_leaves(ours[key]), jax.tree_util.tree_leaves(expected[key])):
            a, b = np.asarray(a), np.asarray(b)
            # float32 on both sides through different kernels: 1e-4 relative to the largest entry.
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max() + 1e-7, err_msg=key)
            compared += 1
    assert compared >= 8  # the encoder's and the decoder's weights and biases


# ---------------------------------------------------------------------------- variance
def _ppca_near_its_posterior(shift, widen):
    """Probabilistic PCA (W with orthogonal columns, so the exact posterior is a diagonal
    Normal) with the encoder set to that posterior, then moved off it: loc by ``shift`` sd,
    scale times ``widen``. Returns the NumPyro VAE, its params and a batch of x."""
    D, L, sigma = 6, 2, 0.5
    spec = ModelSpec(
        latent_dim=L,
        decoder="linear",
        likelihood="normal",
        encoder_options={"hidden": []},
        likelihood_options={"scale_mode": "fixed", "scale": sigma},
    )
    rng = np.random.default_rng(0)
    W = np.linalg.qr(rng.normal(size=(D, L)))[0] * np.array([2.0, 1.0])
    b = rng.normal(size=D)
    cov = np.linalg.inv(np.eye(L) + W.T @ W / sigma**2)  # posterior covariance, diagonal here
    A, sd = cov @ W.T / sigma**2, np.sqrt(np.diag(cov))  # posterior mean A (x - b)
    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in pb.build_vae(spec, (D,)).state_dict().items()}
    state.update(
        {
            "decoder.linear.weight": W,
            "decoder.linear.bias": b,
            "encoder.head.loc.weight": A,
            "encoder.head.loc.bias": -A @ b + shift * sd,
            "encoder.head.raw_scale.weight": np.zeros((L, D)),
            "encoder.head.raw_scale.bias": np.log(np.expm1(widen * sd - 1e-5)),  # softplus(.) + MIN_SCALE
        }
    )
    vae = npb.build_vae(spec, (D,), jax.random.PRNGKey(0), dataset_size=N_DATA)
    params = npb.params_from_torch(vae, {k: np.asarray(v, np.float32) for k, v in state.items()})
    x = rng.normal(size=(4, L)) @ W.T + b + sigma * rng.normal(size=(4, D))
    return vae, params, jnp.asarray(x, jnp.float32)


def test_dreg_lowers_the_variance_of_the_guide_gradient_and_keeps_its_mean():
    """With q near the posterior, the IWAE gradient of the guide is dominated by its
    score-function term, whose variance DReG removes; both have the same expectation
    (for β != 1 too, with the weights (1 - β) w~ + β w~^2)."""
    vae, params, x = _ppca_near_its_posterior(shift=1.0, widen=1.5)
    K, R = 20, 500

    def guide_gradients(key, beta):
        def loss(p, estimator):
            return npb.terms(
                handlers.substitute(vae.model, data=p),
                handlers.substitute(vae.guide, data=p),
                key,
                x,
                beta,
                estimator=estimator,
                num_particles=K,
            ).loss

        return [
            jnp.concatenate(
                [g.ravel() for g in jax.tree_util.tree_leaves(jax.grad(loss)(params, estimator)["encoder$params"])]
            )
            for estimator in ("iwae", "dreg")
        ]

    draws = jax.jit(jax.vmap(guide_gradients, in_axes=(0, None)))  # one program for both β
    keys = jax.random.split(jax.random.PRNGKey(1), R)
    for beta in (1.0, 0.5):
        iwae, dreg = (np.asarray(d, np.float64) for d in draws(keys, beta))
        var_iwae, var_dreg = iwae.var(0, ddof=1), dreg.var(0, ddof=1)
        # Total variance over the guide's 28 gradient coordinates from R = 500 independent
        # draws: a single coordinate's sample variance has relative standard error
        # sqrt(2 / (R - 1)) = 6 % for Gaussian noise (a few times that for heavy tails).
        # At β = 1 DReG's is about 150 times smaller here, and asking for 10 times leaves a
        # margin of many standard errors. At β = 0.5 the tempered target is not the posterior
        # that q is near, so less is gained (about 5 times); 2 times is asked.
        limit = 0.1 if beta == 1.0 else 0.5
        assert var_dreg.sum() < limit * var_iwae.sum(), (beta, var_dreg.sum(), var_iwae.sum())
        # The same expected gradient: the difference of the means, coordinate by coordinate,
        # within 4.5 standard errors (independent draws; a false alarm about once in 150,000
        # per coordinate); and the expected gradient itself is resolved well beyond that
        # (q is off the posterior), so the agreement is not that of two noisy zeros.
        diff = dreg.mean(0) - iwae.mean(0)
        se = np.sqrt((var_iwae + var_dreg) / R)
        assert (np.abs(diff) < 4.5 * se).all(), (beta, np.abs(diff / se).max())
        assert (np.abs(dreg.mean(0)) > 4.5 * se).sum() >= 3, beta


# ------------------------------------------------------------------------- pyro / svi
def test_dreg_trains_through_pyro_svi():
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = pb.build_vae(SPEC, SHAPE)
    x = torch.as_tensor(binary_batch(batch=64))
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.05}), pb.VAEObjective("dreg", num_particles=3))
    losses = [svi.step(x) for _ in range(20)]
    assert len(pyro.get_param_store()) > 0  # the networks' parameters reached Pyro's param store
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_dreg_trains_through_numpyro_svi():
    import optax
    from numpyro.infer import SVI

    _, vae, _ = pair()
    x = jnp.asarray(binary_batch(batch=64))
    svi = SVI(vae.model, vae.guide, optax.adam(5e-2), npb.VAEObjective("dreg", num_particles=3))
    state = svi.init(jax.random.PRNGKey(0), x)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(20):
        state, loss = update(state, x)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_a_guide_without_stoppable_parameters_is_refused_by_name():
    tvae, jvae, params = pair()
    x = binary_batch()

    def flow_guide(x, beta=1.0):  # a non-Gaussian q: DReG cannot stop its parameters generically
        loc, scale = tvae.encoder(x)
        with tvae._plate(x), poutine.scale(scale=beta):
            base = pyro.distributions.Normal(loc, scale)
            q = pyro.distributions.TransformedDistribution(base, [pyro.distributions.transforms.ExpTransform()])
            return pyro.sample("z", q.to_event(1))

    from ppvae.errors import UsageError

    with pytest.raises(UsageError, match="TransformedDistribution .a flow, as model.guide = iaf.*--elbo iwae"):
        pb.terms(tvae.model, flow_guide, torch.as_tensor(x), beta=1.0, estimator="dreg", num_particles=2)

    def jax_flow_guide(x, beta=1.0):
        loc, scale = jvae.with_params(params)["encoder"](x)
        with jvae._plate(x), handlers.scale(scale=beta):
            q = ndist.TransformedDistribution(ndist.Normal(loc, scale), ndist.transforms.ExpTransform())
            return numpyro.sample("z", q.to_event(1))

    with pytest.raises(UsageError, match="TransformedDistribution .a flow, as model.guide = iaf.*--elbo iwae"):
        npb.terms(
            handlers.substitute(jvae.model, data=params),
            jax_flow_guide,
            jax.random.PRNGKey(0),
            jnp.asarray(x),
            1.0,
            estimator="dreg",
            num_particles=2,
        )


@pytest.mark.parametrize("guide", ["lowrank", "fullrank"])
def test_dreg_with_full_covariance_guides(guide):
    """Low-rank and full-rank Normal guides: the IWAE value, the IWAE gradient for the
    decoder, another (finite) gradient for the encoder, on both backends."""
    spec = ModelSpec(latent_dim=LATENT, guide=guide, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]})
    x, K = binary_batch(), 4
    torch.manual_seed(0)
    tvae = pb.build_vae(spec, SHAPE, dataset_size=N_DATA, register_params=False)
    grads = {}
    for estimator in ("iwae", "dreg"):
        t = seeded(
            lambda: pb.terms(tvae.model, tvae.guide, torch.as_tensor(x), beta=1.0, estimator=estimator, num_particles=K)
        )
        grads[estimator] = (t.loss.detach(), torch_grads(tvae, t.loss))
    assert torch.equal(grads["iwae"][0], grads["dreg"][0])
    for name, g in grads["dreg"][1].items():
        assert np.isfinite(g).all(), name
        if name.startswith("encoder."):
            continue
        np.testing.assert_allclose(g, grads["iwae"][1][name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert any(
        np.abs(g - grads["iwae"][1][n]).max() > 1e-4 for n, g in grads["dreg"][1].items() if n.startswith("encoder.")
    )

    jvae = npb.build_vae(spec, SHAPE, jax.random.PRNGKey(0), dataset_size=N_DATA)
    params = npb.initial_params(jvae)
    key = jax.random.PRNGKey(1)

    def loss(p, estimator):
        return npb.terms(
            handlers.substitute(jvae.model, data=p),
            handlers.substitute(jvae.guide, data=p),
            key,
            jnp.asarray(x),
            1.0,
            estimator=estimator,
            num_particles=K,
        ).loss

    (v_iwae, g_iwae), (v_dreg, g_dreg) = (jax.value_and_grad(loss)(params, e) for e in ("iwae", "dreg"))
    assert float(v_iwae) == float(v_dreg)
    for k in params:
        for a, b in zip(jax.tree_util.tree_leaves(g_dreg[k]), jax.tree_util.tree_leaves(g_iwae[k])):
            assert np.isfinite(np.asarray(a)).all(), k
            if k != "encoder$params":
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6, err_msg=k)


def test_dreg_with_a_flow_guide_is_refused_before_anything_is_written(tmp_path):
    from click.testing import CliRunner

    from ppvae.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", "--guide", "iaf", "--elbo", "dreg", "--out", str(out), "-q"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert 'model.guide = "iaf"' in result.output and "--elbo iwae" in result.output
    assert not out.exists()


# ------------------------------------------------------------------------------ ppvae fit
# NumPyro: three compiled programs (the epoch, held-out ELBO, evaluation), ~15 s on 2 idle cores.
@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_ppvae_fit_trains_with_dreg(backend, tmp_path, digits_npy, monkeypatch):
    from click.testing import CliRunner

    from ppvae.cli import cli

    trainers = []
    if backend == "numpyro":  # keep the trainer, to count its compilations
        from ppvae.backends.numpyro import trained
        from ppvae.backends.numpyro.trainer import Trainer

        class Kept(Trainer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                trainers.append(self)

        monkeypatch.setattr(trained, "Trainer", Kept)
    sets = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    out = tmp_path / "run"
    # 480 training digits in 5 batches of 96: one compiled epoch program, no smaller last batch.
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            "--data",
            str(digits_npy),
            "--elbo",
            "dreg",
            "--num-particles",
            "5",
            "--backend",
            backend,
            "--epochs",
            "2",
            "--batch-size",
            "96",
            "--latent-dim",
            "2",
            "-q",
            "--out",
            str(out),
            *sets,
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["heldout_elbo"]) for r in records)
    assert records[1]["loss"] < records[0]["loss"]  # it learns
    assert 'elbo = "dreg"' in (out / "config.toml").read_text()
    if backend == "numpyro":
        assert len(trainers) == 1 and trainers[0].compilations == 1  # the epoch compiled once for both epochs


def test_compare_trains_dreg_rows_with_k_like_iwae_rows():
    from ppvae.analysis.compare import DEFAULT_IWAE_PARTICLES, _runnable_row
    from ppvae.spec.config import Config

    cfg, k = _runnable_row(Config(), "numpyro", "dreg")  # the spec's K is 1: IWAE's default K instead
    assert (cfg.train.elbo, cfg.train.backend, cfg.train.num_particles, k) == (
        "dreg",
        "numpyro",
        DEFAULT_IWAE_PARTICLES,
        DEFAULT_IWAE_PARTICLES,
    )
