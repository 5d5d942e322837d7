"""Guide families of q(z|x): diagonal, lowrank, fullrank and iaf, on both backends.

Training through ``ppvae.fit`` and reloading, the diagonal family's unchanged numbers,
exact densities (dense Normals, the flow's change of variables), agreement of the two
backends on the same weights, the richer families closing the gap on a correlated
posterior, the sampled-KL fallback, and the one-line errors for bad settings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import pyro
import pyro.distributions as dist
import torch
from click.testing import CliRunner
from pyro import poutine

import ppvae
from ppvae.spec import registry
from ppvae.backends import pyro as pb
from ppvae.backends.pyro import guides as pg
from ppvae.cli import cli
from ppvae.spec.config import Config, ModelSpec, parse_override
from ppvae.errors import UsageError

from conftest import FAST, embedded_digits

FAMILIES = ("diagonal", "lowrank", "fullrank", "iaf")
# 128 digits: 102 train / 26 held out; batch 51 makes two full batches per epoch, so the
# NumPyro trainer compiles one epoch program and no separate last step.
FIT = {**FAST, "model.latent_dim": 2, "train.epochs": 1, "train.batch_size": 51}
# Training loss and held-out ELBO of this fit with the diagonal guide, recorded on main at
# commit 85c8531, before guide families existed.
RECORDED = {"pyro": (546.0048522949219, -539.4846835881472), "numpyro": (549.1360473632812, -542.4136565843454)}
# Small networks for the density checks: event (5,), z of size 3.
SMALL = {"latent_dim": 3, "encoder_options": {"hidden": [8]}, "decoder_options": {"hidden": [8]}}
OPTIONS = {"diagonal": {}, "lowrank": {"rank": 2}, "fullrank": {}, "iaf": {"hidden": [8], "context_dim": 3}}


@pytest.fixture
def npb():
    pytest.importorskip("numpyro")
    pytest.importorskip("equinox")
    from ppvae.backends import numpyro as backend

    return backend


@pytest.fixture(scope="module")
def digits128(tmp_path_factory):
    path = tmp_path_factory.mktemp("guides") / "digits128.npy"
    np.save(path, embedded_digits(128))
    return path


def _same(a: dict, b: dict) -> None:
    """Equal evaluation dicts (NaN equal to NaN: a non-factorizing KL has no per-dimension values)."""
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_equal(a[key], b[key], err_msg=key)


def _spec(guide: str, **extra) -> ModelSpec:
    return ModelSpec(**{**SMALL, "guide": guide, "guide_options": OPTIONS[guide], **extra})


# ------------------------------------------------------------------------------- training and reload
# A NumPyro fit compiles its epoch program and its evaluation (about 15 s of CPU per family).
FIT_CASES = [
    pytest.param(family, backend, id=f"{family}-{backend}", marks=[pytest.mark.slow] if backend == "numpyro" else [])
    for family in FAMILIES
    for backend in ("pyro", "numpyro")
]


@pytest.mark.parametrize("family, backend", FIT_CASES)
def test_every_family_trains_through_fit_and_reloads_with_identical_numbers(tmp_path, digits128, family, backend):
    if backend == "numpyro":
        pytest.importorskip("numpyro")
    overrides = {**FIT, "data.source": str(digits128), "train.backend": backend, "model.guide": family}
    run = ppvae.fit(out=tmp_path / "run", overrides=overrides, pictures=False)
    record = run.metrics()[-1]
    assert math.isfinite(record["loss"]) and math.isfinite(record["heldout_elbo"])
    if family == "diagonal":
        # The default family is the old diagonal guide: the same numbers as before it existed.
        # Equal on the machine that recorded them; the margin allows another CPU's float32
        # summation order.
        assert record["loss"] == pytest.approx(RECORDED[backend][0], rel=2e-6)
        assert record["heldout_elbo"] == pytest.approx(RECORDED[backend][1], rel=2e-6)

    loaded = ppvae.load(run.path)
    assert loaded.config.model.guide == family
    assert (loaded.config.model.guide_options == {}) == (family in ("diagonal", "fullrank"))
    num_samples = FAST["train.eval_num_samples"]
    _same(loaded.evaluate(num_samples=num_samples), run.evaluate(num_samples=num_samples))
    draws = loaded.trained.draws(run.heldout()[:3], 4)
    assert draws["z"].shape == (4, 3, 2) and np.isfinite(draws["log_q"]).all()
    loc, scale = loaded.encode(run.heldout()[:3])
    assert loc.shape == scale.shape == (3, 2)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_a_flow_guide_run_resumes_to_the_same_parameters(tmp_path, digits128, backend):
    """The flows' weights and their optimizer state travel in the checkpoint."""
    if backend == "numpyro":
        pytest.importorskip("numpyro")
    overrides = {
        **FIT,
        "data.source": str(digits128),
        "train.backend": backend,
        "model.guide": "iaf",
        "train.epochs": 2,
    }
    whole = ppvae.fit(out=tmp_path / "whole", overrides=overrides, pictures=False)
    ppvae.fit(out=tmp_path / "part", overrides=overrides, stop_after_steps=2, pictures=False)
    resumed = ppvae.fit(resume=tmp_path / "part", pictures=False)
    from ppvae.inference.checkpoints import load_arrays

    wa, meta = load_arrays(whole.path / "checkpoint.safetensors")
    wb, _ = load_arrays(resumed.path / "checkpoint.safetensors")
    names = [k for k in wa if k.startswith(("model.", "params."))]
    # Pyro names its arrays; NumPyro stores leaves by index with their paths in the meta record.
    stored = names if backend == "pyro" else meta["param_paths"]
    assert any("guide" in name and "flows" in name for name in stored)
    assert all(np.array_equal(wa[k], wb[k]) for k in names)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in recs]  # noqa: E731
    assert strip(resumed.metrics()) == strip(whole.metrics())


# ------------------------------------------------------------------------------ the diagonal default
def test_pyro_diagonal_family_is_the_old_guide_exactly():
    vae = pb.build_vae(_spec("diagonal"), (5,), dataset_size=40)
    x = torch.rand(8, 5).round()

    def old_guide(x, beta=None):  # the guide before guide families: the encoder's Normal
        with vae._plate(x):
            loc, scale = vae.encoder(x)
            with poutine.scale(scale=beta):
                return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    for estimator in ("meanfield", "trace", "iwae"):
        torch.manual_seed(3)
        new = pb.terms(vae.model, vae.guide, x, beta=0.7, estimator=estimator, num_particles=3)
        torch.manual_seed(3)
        old = pb.terms(vae.model, old_guide, x, beta=0.7, estimator=estimator, num_particles=3)
        assert torch.equal(new.loss, old.loss) and torch.equal(new.kl, old.kl), estimator
    assert not list(vae.guide_family.parameters())
    assert not any("guide" in name for name in vae.state_dict())


def test_numpyro_diagonal_family_is_the_old_guide_exactly(npb):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro import handlers

    vae = npb.build_vae(_spec("diagonal"), (5,), jax.random.PRNGKey(0), dataset_size=40)
    params = npb.initial_params(vae)
    assert "guide$params" not in params
    x = jnp.asarray(np.random.default_rng(0).random((8, 5)).round(), jnp.float32)

    def old_guide(x, beta=1.0):
        encoder = vae._part("encoder")
        with vae._plate(x):
            loc, scale = encoder(x)
            with handlers.scale(scale=beta):
                return numpyro.sample("z", ndist.Normal(loc, scale).to_event(1))

    model = handlers.substitute(vae.model, data=params)
    for estimator in ("meanfield", "iwae"):  # the analytic KL, and K particles
        new = npb.terms(
            model,
            handlers.substitute(vae.guide, data=params),
            jax.random.PRNGKey(5),
            x,
            0.7,
            estimator=estimator,
            num_particles=3,
        )
        old = npb.terms(
            model,
            handlers.substitute(old_guide, data=params),
            jax.random.PRNGKey(5),
            x,
            0.7,
            estimator=estimator,
            num_particles=3,
        )
        assert float(new.loss) == float(old.loss) and float(new.kl) == float(old.kl), estimator


# ------------------------------------------------------------------------------------ exact densities
@pytest.mark.parametrize("rank", [1, 2, 4])
def test_lowrank_density_is_the_dense_normal_with_its_covariance(npb, rank):
    import jax.numpy as jnp

    rng = np.random.default_rng(rank)
    z_dim = 4
    loc, scale = rng.normal(size=(3, z_dim)), rng.uniform(0.2, 2.0, size=(3, z_dim))
    shape = rng.normal(size=(3, z_dim * rank))
    cov = np.einsum(
        "bi,bij,bj->bij",
        scale,
        np.eye(z_dim) + np.einsum("bir,bjr->bij", shape.reshape(3, z_dim, rank), shape.reshape(3, z_dim, rank)),
        scale,
    )
    z = rng.normal(size=(5, 3, z_dim))
    dense = torch.distributions.MultivariateNormal(torch.as_tensor(loc), covariance_matrix=torch.as_tensor(cov))
    expected = dense.log_prob(torch.as_tensor(z)).numpy()

    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    q_t = pg.LowRankGuide(z_dim, rank=rank)(f32(loc), f32(scale), f32(shape))
    np.testing.assert_allclose(q_t.covariance_matrix.numpy(), cov, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q_t.log_prob(f32(z)).numpy(), expected, rtol=1e-5)
    j32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    q_j = npb.guides.LowRankGuide(z_dim, rank=rank)(j32(loc), j32(scale), j32(shape))
    np.testing.assert_allclose(np.asarray(q_j.covariance_matrix), cov, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(q_j.log_prob(j32(z))), expected, rtol=1e-5)


def test_fullrank_density_is_the_dense_normal_with_its_cholesky_factor(npb):
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    z_dim = 4
    loc, scale = rng.normal(size=(3, z_dim)), rng.uniform(0.2, 2.0, size=(3, z_dim))
    lower = rng.normal(size=(3, z_dim * (z_dim - 1) // 2))
    m = np.zeros((3, z_dim, z_dim))
    rows, cols = np.tril_indices(z_dim, -1)
    m[:, rows, cols] = lower
    tril = scale[:, :, None] * (np.eye(z_dim) + m)
    z = rng.normal(size=(5, 3, z_dim))
    dense = torch.distributions.MultivariateNormal(
        torch.as_tensor(loc), covariance_matrix=torch.as_tensor(tril @ tril.transpose(0, 2, 1))
    )
    expected = dense.log_prob(torch.as_tensor(z)).numpy()

    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    q_t = pg.FullRankGuide(z_dim)(f32(loc), f32(scale), f32(lower))
    np.testing.assert_allclose(q_t.scale_tril.numpy(), tril, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(q_t.log_prob(f32(z)).numpy(), expected, rtol=1e-5)
    j32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    q_j = npb.guides.FullRankGuide(z_dim)(j32(loc), j32(scale), j32(lower))
    np.testing.assert_allclose(np.asarray(q_j.scale_tril), tril, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(q_j.log_prob(j32(z))), expected, rtol=1e-5)


def test_iaf_density_is_the_change_of_variables_of_its_flows():
    torch.manual_seed(0)
    family = pg.IAFGuide(3, num_flows=2, hidden=[8], context_dim=2).double()
    loc, scale, context = torch.randn(1, 3).double(), torch.rand(1, 3).double() + 0.5, torch.randn(1, 2).double()
    q = family(loc, scale, context)
    u = torch.randn(1, 3).double()

    def flow(v):
        for t in q.transforms:
            v = t(v)
        return v

    z = flow(u).detach()
    jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0], u[0])
    expected = dist.Normal(loc, scale).to_event(1).log_prob(u) - torch.linalg.slogdet(jac)[1]
    # A fresh copy of z is not in the transforms' caches: log q inverts the flows.
    assert torch.allclose(q.log_prob(z.clone()), expected, rtol=1e-10, atol=1e-10)
    # The autoregressive structure: the first flow (natural order) has a triangular Jacobian.
    first = torch.autograd.functional.jacobian(lambda v: q.transforms[0](v[None])[0], u[0])
    assert torch.all(first.triu(1) == 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_q_agrees_between_backends_on_the_same_weights(npb, family):
    import jax.numpy as jnp

    torch.manual_seed(1)
    spec = _spec(family)
    tvae = pb.build_vae(spec, (5,))
    with torch.no_grad():  # biases away from their initial values so every weight matters
        for p in tvae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    state = {k: v.detach().numpy() for k, v in tvae.state_dict().items()}
    import jax

    jvae = npb.build_vae(spec, (5,), jax.random.PRNGKey(0))
    params = npb.params_from_torch(jvae, state)
    x = np.random.default_rng(2).random((4, 5)).astype(np.float32)
    z = np.random.default_rng(3).normal(size=(6, 4, 3)).astype(np.float32)
    with torch.no_grad():
        lp_t = tvae.posterior(torch.as_tensor(x)).log_prob(torch.as_tensor(z)).numpy()
    q_j = jvae.posterior(jvae.with_params(params), jnp.asarray(x))
    lp_j = np.asarray(q_j.log_prob(jnp.asarray(z)))
    np.testing.assert_allclose(lp_j, lp_t, rtol=1e-5)
    if family == "iaf":  # the masks the JAX flows build are the ones Pyro's networks hold
        for i, f in enumerate(jvae.modules["guide"].flows):
            for j, layer in enumerate(f.nn.layers):
                assert np.array_equal(np.asarray(layer.mask), state[f"guide_family.flows.{i}.nn.layers.{j}.mask"] > 0)


def test_meanfield_falls_back_to_the_sampled_kl_for_every_correlated_family(npb):
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    x = np.random.default_rng(0).random((6, 5)).round().astype(np.float32)
    for family in ("lowrank", "fullrank", "iaf"):
        vae = pb.build_vae(_spec(family), (5,))
        results = []
        for estimator in ("meanfield", "trace"):
            torch.manual_seed(4)
            results.append(pb.terms(vae.model, vae.guide, torch.as_tensor(x), estimator=estimator).loss)
        assert torch.equal(*results), family  # no closed form: the same draws, the same sampled KL
    # NumPyro (run op by op here, which is slow): one family; the fits above train every
    # family with the default "meanfield" estimator on both backends.
    jvae = npb.build_vae(_spec("lowrank"), (5,), jax.random.PRNGKey(0))
    params = npb.initial_params(jvae)
    model, guide = (handlers.substitute(f, data=params) for f in (jvae.model, jvae.guide))
    mf, tr = (
        npb.terms(model, guide, jax.random.PRNGKey(2), jnp.asarray(x), estimator=e).loss for e in ("meanfield", "trace")
    )
    assert float(mf) == float(tr)


# --------------------------------------------------------------------- the richer family's job
@pytest.mark.slow  # 200 optimizer steps for each of four families
def test_richer_families_close_the_gap_that_a_diagonal_q_cannot_on_a_correlated_ppca():
    """Probabilistic PCA with a fixed decoder: its exact posterior is a correlated Normal.

    The generative model (W with nearly parallel columns, noise 0.5) stays fixed and only
    q is trained, so log p(x) is exact and constant: the gap log p(x) - ELBO is what q
    misses. A diagonal q cannot go below the KL from the best diagonal Normal to the
    posterior; the correlated families can reach zero.
    """
    z_dim, d, sigma, n = 2, 6, 0.5, 128
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=d), rng.normal(size=d)
    w = np.stack([a, a + 0.15 * b], 1)
    x = torch.as_tensor(rng.normal(size=(n, z_dim)) @ w.T + sigma * rng.normal(size=(n, d)), dtype=torch.float32)
    precision = np.eye(z_dim) + w.T @ w / sigma**2
    # KL(best diagonal Normal || posterior) = (sum log diag(P) - log det P) / 2, P the precision.
    diagonal_floor = 0.5 * (np.log(np.diag(precision)).sum() - np.linalg.slogdet(precision)[1])
    assert diagonal_floor > 0.3  # the posterior correlation is strong (|rho| ~ 0.73)

    gaps = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from threads, and lose on a busy machine
    try:
        for family, options in (
            ("diagonal", {}),
            ("fullrank", {}),
            ("lowrank", {"rank": 1}),
            ("iaf", {"hidden": [16], "context_dim": 4}),
        ):
            gaps[family] = _train_q_and_measure_gap(family, options, w, x, sigma)
    finally:
        torch.set_num_threads(threads)

    gap, se = gaps["diagonal"]
    assert gap >= diagonal_floor - 4 * se  # no diagonal q beats its family's floor
    for family in ("fullrank", "lowrank", "iaf"):
        other, other_se = gaps[family]
        # A correlated q gets well under the diagonal floor, so its ELBO is the higher one.
        assert other < 0.25 * diagonal_floor, (family, gaps)
        assert other <= gap + 4 * math.hypot(se, other_se), (family, gaps)


def _train_q_and_measure_gap(family, options, w, x, sigma):
    """Train q (encoder and guide family) for 200 steps with the pPCA decoder fixed to ``w``.

    Returns the mean gap log p(x) - ELBO over the points and its Monte-Carlo standard error.
    """
    from ppvae.backends.pyro.evaluation import exact_log_px
    from ppvae.backends.pyro.objectives import log_weights

    pyro.set_rng_seed(0)
    z_dim, d = w.shape[1], w.shape[0]
    spec = ModelSpec(
        latent_dim=z_dim,
        likelihood="normal",
        decoder="linear",
        guide=family,
        guide_options=options,
        likelihood_options={"scale_mode": "fixed", "scale": sigma},
        encoder_options={"hidden": []},
    )
    vae = pb.build_vae(spec, (d,), register_params=False)
    with torch.no_grad():
        vae.decoder.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        vae.decoder.linear.bias.zero_()
    optimizer = torch.optim.Adam([*vae.encoder.parameters(), *vae.guide_family.parameters()], lr=0.05)
    for _ in range(200):
        loss = pb.terms(vae.model, vae.guide, x, estimator="trace", num_particles=4).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        lw = log_weights(vae.model, vae.guide, x, beta=1.0, num_particles=200).double()
    # Monte-Carlo standard error of the mean ELBO over the points x 200 draws.
    se = float(lw.std() / math.sqrt(lw.numel()))
    return float((exact_log_px(vae, x) - lw.mean(0)).mean()), se


# ------------------------------------------------------------------------------------------ errors
def _one_line_error(fn, *needles):
    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_bad_guide_settings_give_one_line_errors(backend):
    if backend == "numpyro":
        pytest.importorskip("numpyro")
        import jax
        from ppvae.backends import numpyro as npb

        build = lambda spec: npb.build_vae(spec, (5,), jax.random.PRNGKey(0))  # noqa: E731
    else:
        build = lambda spec: pb.build_vae(spec, (5,))  # noqa: E731
    assert registry.names("guide", backend) == ["diagonal", "fullrank", "iaf", "lowrank"]
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="lowrank", guide_options={"rank": 0})),
        "'lowrank'",
        "rank must be a positive integer",
        "model.guide_options.rank",
    )
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="iaf", guide_options={"num_flows": 0})),
        "'iaf'",
        "num_flows must be a positive integer",
    )
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="iaf", guide_options={"hidden": [2]})), "at least latent_dim = 3"
    )
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="iaf", guide_options={"context_dim": -1})),
        "context_dim must be a non-negative integer",
    )
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="banana")), "'banana'", "diagonal, fullrank, iaf, lowrank"
    )
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, guide="lowrank", guide_options={"rnak": 2})),
        "no setting rnak",
        "valid settings: rank",
    )


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_an_encoder_without_extra_outputs_serves_the_diagonal_guide_only(backend):
    name = f"plain_{backend}_for_guides"
    if backend == "numpyro":
        pytest.importorskip("numpyro")
        import jax
        from ppvae.backends import numpyro as npb
        from ppvae.backends.numpyro.nets import MLPEncoder as base

        class Plain(base):
            def __init__(self, event_shape, latent_dim, *, key):
                super().__init__(event_shape, latent_dim, hidden=[4], key=key)

        build = lambda spec: npb.build_vae(spec, (5,), jax.random.PRNGKey(0))  # noqa: E731
    else:
        from ppvae.backends.pyro.nets import MLPEncoder as base

        class Plain(base):
            def __init__(self, event_shape, latent_dim):
                super().__init__(event_shape, latent_dim, hidden=[4])

        build = lambda spec: pb.build_vae(spec, (5,))  # noqa: E731
    registry.register("encoder", name, backend=backend)(Plain)
    build(ModelSpec(latent_dim=3, encoder=name))  # the default family needs no extra outputs
    build(ModelSpec(latent_dim=3, encoder=name, guide="iaf", guide_options={"context_dim": 0, "hidden": [4]}))
    _one_line_error(
        lambda: build(ModelSpec(latent_dim=3, encoder=name, guide="lowrank")),
        "guide 'lowrank' needs 6 extra encoder outputs",
        f"encoder {name!r}",
        "extra_outputs",
        'model.guide = "diagonal"',
    )


def test_local_gaps_refuse_a_guide_they_do_not_describe(npb):
    import jax

    vae = npb.build_vae(_spec("lowrank"), (5,), jax.random.PRNGKey(0))
    x = np.random.default_rng(0).random((2, 5)).astype(np.float32)
    _one_line_error(lambda: npb.local_gaps(vae, npb.initial_params(vae), x), "'lowrank'", "--gap-points 0")


# ------------------------------------------------------------------------------- config and CLI
def test_guide_in_the_config_validates_round_trips_and_keeps_old_fingerprints():
    cfg = Config().with_overrides(
        dict([parse_override("model.guide=LowRank"), parse_override("model.guide_options.rank=3")])
    )
    assert (cfg.model.guide, cfg.model.guide_options) == ("lowrank", {"rank": 3})
    assert Config.from_toml_string(cfg.to_toml_string()) == cfg
    assert cfg.fingerprint() != Config().fingerprint()
    # Specs with the default guide hash as they did before the guide keys existed, so older
    # run folders still load (values recorded at commit 85c8531).
    assert Config().fingerprint() == "eca2bafa91b5a9c4"
    with pytest.raises(UsageError, match="model.guide must be a component name"):
        ModelSpec(guide=3)
    with pytest.raises(UsageError, match="model.guide_options must be a table"):
        ModelSpec(guide_options="rank=2")


def test_cli_fit_takes_a_guide_and_reports_an_unknown_one_in_one_line(tmp_path, digits128):
    runner = CliRunner()
    bad = runner.invoke(
        cli, ["fit", "--guide", "banana", "--data", str(digits128), "--out", str(tmp_path / "bad"), "-q"]
    )
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output and "diagonal, fullrank, iaf, lowrank" in bad.output
    sets = [a for k, v in {**FIT, "model.guide_options.rank": 1}.items() for a in ("--set", f"{k}={v}")]
    good = runner.invoke(
        cli, ["fit", "--guide", "lowrank", "--data", str(digits128), "--out", str(tmp_path / "ok"), "-q", *sets]
    )
    assert good.exit_code == 0, good.output
    saved = Config.from_toml(tmp_path / "ok" / "config.toml")
    assert (saved.model.guide, saved.model.guide_options) == ("lowrank", {"rank": 1})
