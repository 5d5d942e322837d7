"""Priors and likelihoods on both backends: training, torch/JAX agreement, KL, VampPrior, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("numpyro")
pytest.importorskip("equinox")

import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from numpyro import handlers  # noqa: E402
from pyro import poutine  # noqa: E402

import ppvae  # noqa: E402
from ppvae.backends import numpyro as npb  # noqa: E402
from ppvae.backends import pyro as pb  # noqa: E402
from ppvae.model.priors import prior_distribution  # noqa: E402
from ppvae.backends.numpyro import trainer as np_trainer  # noqa: E402
from ppvae.backends.pyro import trainer as pt_trainer  # noqa: E402
from ppvae.spec.config import DataSpec, ModelSpec  # noqa: E402
from ppvae.data import load_dataset, prepare_new  # noqa: E402
from ppvae.errors import DataError, UsageError  # noqa: E402

from conftest import embedded_digits  # noqa: E402

BACKENDS = ("pyro", "numpyro")
TINY = {
    "model.encoder_options.hidden": [16],
    "model.decoder_options.hidden": [16],
    "train.eval_num_samples": 5,
    "train.device": "cpu",
}


@pytest.fixture(scope="module")
def digits8(tmp_path_factory):
    """128 real digits downsampled to 8 x 8, uint8 grey levels 0..255 (also valid counts)."""
    path = tmp_path_factory.mktemp("data") / "digits8.npy"
    np.save(path, embedded_digits(128)[:, 2:26:3, 2:26:3].copy())
    return path


# ----------------------------------------------------------------------------------- training
# Every new prior and likelihood, paired so that each fit trains one of each. Per case:
# the data settings, the component parameters that must learn and those that must not.
TRAIN_CASES = {
    "laplace+laplace": dict(
        prior=("laplace", {}),
        likelihood=("laplace", {"scale_mode": "per_dim"}),
        data={"data.standardize": True, "data.binarize": "none"},
        learn={"likelihood": ["log_scale"]},
        fixed={"prior": ["loc", "scale"]},
    ),
    "student_t+beta": dict(
        prior=("student_t", {"learn_df": True}),
        likelihood=("beta", {}),
        data={"data.binarize": "none"},
        learn={"prior": ["log_df"]},
        fixed={"prior": ["loc", "scale"]},
    ),
    "vamp+categorical": dict(
        prior=("vamp", {"num_components": 4}),
        likelihood=("categorical", {}),
        data={"data.binarize": "none"},
        learn={"prior": ["raw_inputs"]},
        fixed={},
    ),
    "mog+zinb": dict(
        prior=("mog", {"num_components": 3}),
        likelihood=("zinb", {}),
        data={"data.scale": "none"},
        learn={"prior": ["means", "log_scales", "logits"], "likelihood": ["log_theta"]},
        fixed={},
    ),
    "vamp+negative_binomial": dict(
        prior=("vamp", {"num_components": 4}),
        likelihood=("negative_binomial", {"dispersion": "shared"}),
        data={"data.scale": "auto"},
        learn={"prior": ["raw_inputs"], "likelihood": ["log_theta"]},
        fixed={},
    ),
    "normal+poisson": dict(
        prior=("normal", {}),
        likelihood=("poisson", {}),
        data={"data.scale": "none"},
        learn={},
        fixed={"prior": ["loc", "scale"]},
    ),
}


def _named_arrays(backend: str, weights, part: str) -> dict[str, np.ndarray]:
    """A part's arrays by name: Pyro state-dict entries, or the NumPyro params' fields."""
    if backend == "pyro":
        prefix = f"{part}."
        return {k[len(prefix) :]: np.asarray(v) for k, v in weights.items() if k.startswith(prefix)}
    tree = weights.get(f"{part}$params")
    if tree is None:
        return {}
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_torch_style_name(path): np.asarray(leaf) for path, leaf in flat}


def _torch_style_name(path) -> str:
    """An Equinox leaf's path spelled like the PyTorch parameter name (``body.0.weight``)."""
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            if entry.name != "layers":  # eqx.nn.Sequential keeps its layers in .layers
                names.append(entry.name)
        else:
            names.append(str(getattr(entry, "idx", getattr(entry, "key", entry))))
    return ".".join(names)


def _capture_initial(monkeypatch, backend: str) -> dict:
    """Record the freshly built VAE's weights when the trainer builds it."""
    seen: dict = {}
    module = pt_trainer if backend == "pyro" else np_trainer
    original = module.build_vae

    def recording(*args, **kwargs):
        vae = original(*args, **kwargs)
        if backend == "pyro":
            seen.update({k: v.detach().clone().numpy() for k, v in vae.state_dict().items()})
        else:
            seen.update(npb.initial_params(vae))
        return vae

    monkeypatch.setattr(module, "build_vae", recording)
    return seen


# A NumPyro fit compiles five programs (~15 s of CPU on its own): those runs are marked slow.
# The fast tests below check every NumPyro component's log density and its gradients (learned
# parameters get Pyro's gradients, constants none) against the Pyro backend.
@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_every_new_prior_and_likelihood_trains_through_fit(tmp_path, digits8, monkeypatch, case, backend):
    c = TRAIN_CASES[case]
    initial = _capture_initial(monkeypatch, backend)
    (prior, prior_options), (likelihood, lik_options) = c["prior"], c["likelihood"]
    overrides = {
        **TINY,
        **c["data"],
        **{f"model.prior_options.{k}": v for k, v in prior_options.items()},
        **{f"model.likelihood_options.{k}": v for k, v in lik_options.items()},
    }
    run = ppvae.fit(
        out=tmp_path / "run",
        prior=prior,
        likelihood=likelihood,
        latent_dim=2,
        epochs=1,
        batch_size=32,
        data=str(digits8),
        backend=backend,
        pictures=False,
        overrides=overrides,
    )
    record = run.metrics()[-1]
    assert all(math.isfinite(record[k]) for k in ("loss", "reconstruction", "kl", "heldout_elbo")), record
    assert math.isfinite(run.summary["evaluation"]["heldout_log_px"])
    final = run.trained.state_arrays() if backend == "pyro" else run.trained.params
    for part in ("prior", "likelihood", "decoder"):
        before, after = _named_arrays(backend, initial, part), _named_arrays(backend, final, part)
        names = c["learn"].get(part, []) if part != "decoder" else list(before)
        changed = [n for n in names if not np.array_equal(before[n], after[n])]
        if part == "decoder":
            assert changed, "the decoder did not learn"
        else:
            assert changed == names, (part, "should learn", names, "changed", changed)
        for name in c["fixed"].get(part, []):
            np.testing.assert_array_equal(before[name], after[name], err_msg=f"{part}.{name} must stay fixed")
    if likelihood in ("poisson", "negative_binomial", "zinb"):
        # Count data: grey levels kept as counts 0..255 (never divided by 255).
        assert run.heldout().max() > 1.0 and np.array_equal(run.heldout(), np.round(run.heldout()))


# ------------------------------------------------------------------- torch vs JAX log densities
# One small event shape and network size for every case below: JAX compiles each
# operation once per shape, so shared shapes keep these tests fast.
SHAPE = (2, 3)
LATENT = 2
NETS = {"encoder_options": {"hidden": [8]}, "decoder_options": {"hidden": [8]}}
LIKELIHOOD_CASES = [
    ("laplace", {"scale_mode": "per_dim"}),
    ("laplace", {"scale_mode": "fixed", "scale": 0.3}),
    ("beta", {}),
    ("beta", {"eps": 1e-2}),
    ("categorical", {}),
    ("categorical", {"num_levels": 5}),
    ("poisson", {}),
    ("negative_binomial", {"dispersion": "per_feature"}),
    ("negative_binomial", {"dispersion": "shared"}),
    ("zinb", {"dispersion": "per_feature"}),
    ("zinb", {"dispersion": "shared"}),
]
PRIOR_CASES = [
    ("laplace", {"loc": 0.3, "scale": 0.7}),
    ("student_t", {"df": 2.5, "scale": 1.5}),
    ("student_t", {"learn_df": True}),
    ("mog", {"num_components": 4}),
    ("vamp", {"num_components": 5}),
    ("vamp", {"num_components": 3, "data_support": "count"}),
    ("vamp", {"num_components": 3, "data_support": "real"}),
]


def _pair(spec: ModelSpec, shape, perturb: bool = True):
    """The same spec on both backends, the Pyro weights (perturbed) copied into the JAX params.

    Returns the Pyro VAE, the NumPyro VAE and its params (converted by ``params_from_torch``).
    """
    torch.manual_seed(0)
    tvae = pb.build_vae(spec, shape, dataset_size=100, register_params=False)
    if perturb:  # move learned scales, dispersions, df, logits away from their round initial values
        with torch.no_grad():
            for p in tvae.parameters():
                p.add_(0.3 * torch.randn_like(p))
    jvae = npb.build_vae(spec, shape, jax.random.PRNGKey(0), dataset_size=100)
    params = npb.params_from_torch(jvae, {k: v.detach().numpy() for k, v in tvae.state_dict().items()})
    return tvae, jvae, params


def _close(a, b, what):
    # float32 on both sides: 1e-5 relative, with a tiny absolute floor for values near zero.
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.abs(a - b) <= 1e-5 * np.maximum(np.abs(a), np.abs(b)) + 1e-5), (what, a, b)


def _close_grads(a, b, what):
    # Gradients of float32 densities whose two implementations use different but equivalent
    # formulas (e.g. the negative binomial): 1e-4 relative to the largest entry.
    a = np.asarray(a.detach() if hasattr(a, "detach") else a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), np.abs(b).max(), 1.0), (what, a, b)


def _same_parameter_grads(module: torch.nn.Module, j_grads: dict, part: str):
    """Pyro's learned parameters and their NumPyro mirrors get the same gradient; the arrays
    Pyro keeps as buffers (constants) get none in NumPyro either (they sit behind stop_gradient)."""
    named = _named_arrays("numpyro", j_grads, part)
    for name, param in module.named_parameters():
        assert param.grad is not None, (part, name)
        _close_grads(param.grad, named[name], f"{part}.{name}")
    for name, _ in module.named_buffers():
        if name in named:
            assert not np.any(named[name]), f"{part}.{name} is a constant but gets a gradient"


def _likelihood_data(name: str, shape, rng, levels=256):
    n = 6
    if name in ("poisson", "negative_binomial", "zinb"):
        x = rng.negative_binomial(2, 0.1, size=(n, *shape)).astype(np.float32)
        x[:, 0] = 0.0  # zeros exercise the zero-inflation branch
        return x
    if name == "categorical":
        return (rng.integers(0, levels, size=(n, *shape)) / (levels - 1)).astype(np.float32)
    if name == "beta":
        x = rng.random((n, *shape)).astype(np.float32)
        x[0].flat[0], x[1].flat[0] = 0.0, 1.0  # exact 0 and 1 are squeezed into [eps, 1 - eps]
        return x
    return rng.normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name,options", LIKELIHOOD_CASES)
def test_likelihood_log_prob_and_mean_agree_between_torch_and_jax(name, options):
    shape = SHAPE
    spec = ModelSpec(latent_dim=LATENT, likelihood=name, likelihood_options=options, **NETS)
    tvae, jvae, params = _pair(spec, shape)
    m = jvae.with_params(params)
    assert tuple(tvae.likelihood.param_shape) == tuple(m["likelihood"].param_shape)
    rng = np.random.default_rng(1)
    out = (2.0 * rng.normal(size=(6, *tvae.likelihood.param_shape))).astype(np.float32)
    x = _likelihood_data(name, shape, rng, options.get("num_levels", 256))
    out_t = torch.as_tensor(out).requires_grad_()
    t_lp = tvae.likelihood(out_t).log_prob(torch.as_tensor(x))
    t_lp.sum().backward()
    with torch.no_grad():
        t_mean = tvae.likelihood.mean(out_t).numpy()

    @jax.jit  # one compiled program instead of one per operation: keeps the test fast
    def jax_side(p, out, x):
        def total(p, out):
            log_prob = jvae.with_params(p)["likelihood"](out).log_prob(x)
            return log_prob.sum(), log_prob

        (_, log_prob), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(p, out)
        return log_prob, jvae.with_params(p)["likelihood"].mean(out), grads

    j_lp, j_mean, (j_grads, j_grad_out) = jax_side(params, jnp.asarray(out), jnp.asarray(x))
    assert t_lp.shape == (6,) and np.isfinite(t_lp.detach().numpy()).all()
    _close(t_lp.detach(), j_lp, "log_prob")
    _close(t_mean, j_mean, "mean")
    assert j_mean.shape == (6, *shape)
    _close_grads(out_t.grad, j_grad_out, "d log_prob / d decoder output")
    _same_parameter_grads(tvae.likelihood, j_grads, "likelihood")


@pytest.mark.parametrize("name,options", PRIOR_CASES)
def test_prior_log_prob_agrees_between_torch_and_jax(name, options):
    spec = ModelSpec(latent_dim=LATENT, prior=name, prior_options=options, likelihood="normal", **NETS)
    tvae, jvae, params = _pair(spec, SHAPE)
    z = (2.0 * np.random.default_rng(2).standard_t(3, size=(4, 5, LATENT))).astype(np.float32)
    z_t = torch.as_tensor(z).requires_grad_()
    t_lp = prior_distribution(tvae.prior, tvae.encoder).log_prob(z_t)
    t_lp.sum().backward()

    @jax.jit
    def jax_side(p, z):
        def total(p, z):
            m = jvae.with_params(p)
            log_prob = prior_distribution(m["prior"], m["encoder"]).log_prob(z)
            return log_prob.sum(), log_prob

        (_, log_prob), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(p, z)
        return log_prob, grads

    j_lp, (j_grads, j_grad_z) = jax_side(params, jnp.asarray(z))
    assert t_lp.shape == (4, 5) and np.isfinite(t_lp.detach().numpy()).all()
    _close(t_lp.detach(), j_lp, "log_prob")
    _close_grads(z_t.grad, j_grad_z, "d log_prob / d z")
    _same_parameter_grads(tvae.prior, j_grads, "prior")
    if name == "vamp":  # the encoder's weights get their gradient through the prior
        _same_parameter_grads(tvae.encoder, j_grads, "encoder")


def test_vamp_data_support_auto_follows_the_likelihood():
    expected = {"bernoulli": "unit_interval", "normal": "real", "poisson": "count"}
    for likelihood, support in expected.items():
        spec = ModelSpec(
            latent_dim=LATENT, prior="vamp", prior_options={"num_components": 3}, likelihood=likelihood, **NETS
        )
        tvae, jvae, params = _pair(spec, SHAPE, perturb=False)
        assert tvae.prior.data_support == jvae.with_params(params)["prior"].data_support == support, likelihood
    u = tvae.prior.pseudo_inputs  # the last one: counts are softplus(raw) >= 0
    assert (u >= 0).all()


# ------------------------------------------------------------------------------------------ KL
def _diagonal_q(latent_dim=LATENT, seed=3):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(2, latent_dim)).astype(np.float32)
    scale = np.exp(rng.normal(scale=0.5, size=(2, latent_dim))).astype(np.float32)
    return loc, scale


def _mc_check(sampled: np.ndarray, analytic: np.ndarray):
    """Sampled KL draws (S, B) against the closed form (B,).

    The mean of S draws has standard error sd / sqrt(S); 5 standard errors bound the
    difference with probability ~1 - 6e-7 per point when the two estimate the same KL.
    """
    mean = sampled.mean(0)
    se = sampled.std(0, ddof=1) / math.sqrt(sampled.shape[0])
    assert np.all(np.abs(mean - analytic) <= 5 * se), (mean, analytic, se)


@pytest.mark.parametrize("prior,options", [("normal", {"loc": 0.2, "scale": 1.5}), ("laplace", {"scale": 0.8})])
def test_sampled_kl_matches_the_closed_form_on_both_backends(prior, options):
    spec = ModelSpec(latent_dim=LATENT, prior=prior, prior_options=options, **NETS)
    tvae, jvae, params = _pair(spec, SHAPE, perturb=False)
    m = jvae.with_params(params)
    loc, scale = _diagonal_q()
    draws = 20000

    q_t = torch.distributions.Independent(torch.distributions.Normal(torch.as_tensor(loc), torch.as_tensor(scale)), 1)
    p_t = prior_distribution(tvae.prior, tvae.encoder)
    torch.manual_seed(0)
    z = q_t.sample((draws,))
    analytic_t = torch.distributions.kl_divergence(q_t, p_t.expand(q_t.batch_shape)).numpy()
    _mc_check((q_t.log_prob(z) - p_t.log_prob(z)).numpy(), analytic_t)

    import numpyro.distributions as ndist
    from numpyro.distributions.kl import kl_divergence

    @jax.jit
    def jax_side(loc, scale, key):
        q_j = ndist.Normal(loc, scale).to_event(1)
        p_j = prior_distribution(m["prior"], m["encoder"])
        zj = q_j.sample(key, (draws,))
        return q_j.log_prob(zj) - p_j.log_prob(zj), kl_divergence(q_j, p_j.expand(q_j.batch_shape))

    sampled_j, analytic_j = jax_side(jnp.asarray(loc), jnp.asarray(scale), jax.random.PRNGKey(0))
    _mc_check(np.asarray(sampled_j), np.asarray(analytic_j))
    # The two closed forms are the same function (NumPyro's Normal-Laplace rule is ppvae's).
    _close(analytic_t, analytic_j, "analytic KL")


def _conditioned_terms(tvae, jvae, params, x):
    """Both backends' (kl, loss) for the meanfield and trace estimators, on one draw of z (the encoder's loc)."""
    out = {}
    with torch.no_grad():
        z_t = tvae.encoder(torch.as_tensor(x))[0]
    for estimator in ("meanfield", "trace"):
        t = pb.terms(
            poutine.condition(tvae.model, {"z": z_t}),
            poutine.condition(tvae.guide, {"z": z_t}),
            torch.as_tensor(x),
            estimator=estimator,
        )
        out["pyro", estimator] = (float(t.kl.detach()), float(t.loss.detach()))

    @jax.jit
    def jax_side(p, x):
        z_j = jvae.with_params(p)["encoder"](x)[0]
        model = handlers.condition(handlers.substitute(jvae.model, data=p), {"z": z_j})
        guide = handlers.condition(handlers.substitute(jvae.guide, data=p), {"z": z_j})
        terms = [npb.terms(model, guide, jax.random.PRNGKey(0), x, estimator=e) for e in ("meanfield", "trace")]
        return [(t.kl, t.loss) for t in terms]

    for estimator, (kl, loss) in zip(("meanfield", "trace"), jax_side(params, jnp.asarray(x))):
        out["numpyro", estimator] = (float(kl), float(loss))
    return out


@pytest.mark.parametrize(
    "prior,options",
    [("student_t", {}), ("mog", {"num_components": 3}), ("vamp", {"num_components": 3}), ("laplace", {})],
)
def test_meanfield_falls_back_to_the_sampled_kl_without_a_closed_form(prior, options):
    """Without a closed form both backends' analytic-KL ELBO uses log q - log p of the draw."""
    spec = ModelSpec(latent_dim=LATENT, prior=prior, prior_options=options, likelihood="bernoulli", **NETS)
    tvae, jvae, params = _pair(spec, SHAPE)
    x = (np.random.default_rng(4).random((5, *SHAPE)) < 0.4).astype(np.float32)
    terms = _conditioned_terms(tvae, jvae, params, x)
    for estimator in ("meanfield", "trace"):
        (t_kl, t_loss), (j_kl, j_loss) = terms["pyro", estimator], terms["numpyro", estimator]
        assert math.isfinite(j_kl)
        _close(t_kl, j_kl, f"{estimator} kl")
        _close(t_loss, j_loss, f"{estimator} loss")
    for backend in BACKENDS:
        analytic, sampled = terms[backend, "meanfield"][0], terms[backend, "trace"][0]
        if prior == "laplace":  # a closed form on both backends: not the one-draw estimate
            assert analytic != pytest.approx(sampled), backend
        else:
            assert analytic == pytest.approx(sampled, rel=1e-6), backend


# --------------------------------------------------------------------------------- VampPrior
def test_vamp_prior_shares_the_encoder_and_its_gradients_reach_it():
    spec = ModelSpec(latent_dim=LATENT, prior="vamp", prior_options={"num_components": 3}, **NETS)
    tvae, jvae, params = _pair(spec, SHAPE, perturb=False)
    m = jvae.with_params(params)
    # Pyro: the prior holds only its pseudo-inputs; the encoder's weights appear once.
    assert [n for n, _ in tvae.prior.named_parameters()] == ["raw_inputs"]
    assert not any(n.startswith("prior.encoder") for n, _ in tvae.named_parameters())
    z = torch.randn(4, LATENT)
    prior_distribution(tvae.prior, tvae.encoder).log_prob(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tvae.encoder.parameters())
    assert tvae.prior.raw_inputs.grad.abs().sum() > 0
    # The model (not only the guide) registers the encoder, so pyro.infer.SVI trains it through p(z).
    import pyro

    tvae.register_params = True
    pyro.clear_param_store()
    poutine.trace(tvae.model).get_trace(torch.rand(3, *SHAPE).round())
    assert any(name.startswith("ppvae_encoder$$$") for name in pyro.get_param_store())

    # NumPyro: the model's trace holds the encoder's params under the guide's name (traced
    # abstractly: only the site names are needed, so nothing is compiled).
    sites = {}

    def record_sites(x):
        for name in ("model", "guide"):
            sites[name] = set(handlers.trace(handlers.seed(getattr(jvae, name), 0)).get_trace(x))
        return x.sum()

    jax.eval_shape(record_sites, jax.ShapeDtypeStruct((3, *SHAPE), jnp.float32))
    assert "encoder$params" in sites["model"] and "encoder$params" in sites["guide"]

    zj = jnp.asarray(z.numpy())

    def log_prior(encoder):
        return prior_distribution(m["prior"], encoder).log_prob(zj).sum()

    import equinox as eqx

    grads = eqx.filter_jit(eqx.filter_grad(log_prior))(m["encoder"])
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert leaves and all(float(jnp.abs(g).sum()) > 0 for g in leaves)


def test_a_prior_built_from_the_encoder_refuses_a_conditional_vae():
    spec = ModelSpec(latent_dim=2, prior="vamp", conditional=True, num_classes=3, **NETS)
    with pytest.raises(UsageError, match="vamp.*conditional"):
        pb.build_vae(spec, SHAPE, register_params=False)
    with pytest.raises(UsageError, match="vamp.*conditional"):
        npb.build_vae(spec, SHAPE, jax.random.PRNGKey(0))


# ------------------------------------------------------------------------------------- errors
BAD_SETTINGS = [
    ("prior", "laplace", {"scale": 0.0}, "scale"),
    ("prior", "student_t", {"df": 0}, "df"),
    ("prior", "student_t", {"scale": -1.0}, "scale"),
    ("prior", "student_t", {"learn_df": "yes"}, "learn_df"),
    ("prior", "mog", {"num_components": 0}, "num_components"),
    ("prior", "mog", {"init_spread": 0.0}, "init_spread"),
    ("prior", "vamp", {"num_components": 0}, "num_components"),
    ("prior", "vamp", {"data_support": "binary"}, "data_support"),
    ("likelihood", "laplace", {"scale": 0}, "scale"),
    ("likelihood", "laplace", {"scale_mode": "learned"}, "scale_mode"),
    ("likelihood", "beta", {"eps": 0.0}, "eps"),
    ("likelihood", "categorical", {"num_levels": 1}, "num_levels"),
    ("likelihood", "negative_binomial", {"dispersion": "gene"}, "dispersion"),
    ("likelihood", "zinb", {"dispersion": "cell"}, "dispersion"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,name,options,setting", BAD_SETTINGS)
def test_bad_settings_name_the_setting(kind, name, options, setting, backend):
    spec = ModelSpec(latent_dim=2, **{kind: name, f"{kind}_options": options}, **NETS)
    with pytest.raises(UsageError, match=rf"{kind} '{name}'.*{setting}") as err:
        if backend == "pyro":
            pb.build_vae(spec, SHAPE, register_params=False)
        else:
            npb.build_vae(spec, SHAPE, jax.random.PRNGKey(0))
    assert "\n" not in str(err.value)
    if "dispersion" in options:  # an unknown choice lists the valid ones
        assert "per_feature, shared" in str(err.value)


@pytest.mark.parametrize("likelihood", ["poisson", "negative_binomial", "zinb"])
def test_count_data_must_be_non_negative_integers(tmp_path, likelihood):
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(40, 6)).astype(np.float32)
    bad = {"fractions": counts + 0.5, "negatives": counts - 5.0}
    for what, x in bad.items():
        path = tmp_path / f"{what}.npy"
        np.save(path, x)
        with pytest.raises(DataError, match=rf"likelihood '{likelihood}'.*non-negative integers") as err:
            load_dataset(DataSpec(source=str(path), binarize="none"), likelihood, "count")
        assert ("negative" if what == "negatives" else "non-integer") in str(err.value)
    # Rescaling or standardizing counts is refused with the setting to change.
    path = tmp_path / "good.npy"
    np.save(path, counts)
    with pytest.raises(DataError, match="data.standardize = false"):
        load_dataset(DataSpec(source=str(path), binarize="none", standardize=True), likelihood, "count")
    with pytest.raises(DataError, match='data.scale = "none"'):
        load_dataset(DataSpec(source=str(path), binarize="none", scale="minmax"), likelihood, "count")
    ds = load_dataset(DataSpec(source=str(path), binarize="none"), likelihood, "count")
    with pytest.raises(DataError, match=rf"likelihood '{likelihood}'"):
        prepare_new(counts[:3] + 0.25, ds.transform, split_seed=0)


def test_eight_bit_images_stay_counts_under_auto_scaling(tmp_path, digits8):
    ds = load_dataset(DataSpec(source=str(digits8)), "poisson", "count")
    assert ds.transform["scale"] == "none" and ds.binarize == "none"
    assert ds.train.max() == 255.0 and np.array_equal(ds.train, np.round(ds.train))
    # Other supports keep dividing 8-bit data by 255.
    assert load_dataset(DataSpec(source=str(digits8)), "beta", "unit_interval").train.max() <= 1.0
    with pytest.raises(DataError, match="likelihood 'poisson'"):
        ppvae.fit(
            out=tmp_path / "run",
            likelihood="poisson",
            data=str(digits8),
            backend="pyro",
            pictures=False,
            overrides={**TINY, "data.scale": "unit"},
        )
