"""The NumPyro backend: parity with Pyro, numerical equivalence, compilation, runs."""

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

import ppvae  # noqa: E402
from ppvae.spec import registry  # noqa: E402
from ppvae.backends import numpyro as npb  # noqa: E402
from ppvae.backends import pyro as pb  # noqa: E402
from ppvae.spec.config import ModelSpec  # noqa: E402

from conftest import FAST  # noqa: E402


def test_every_component_exists_in_both_backends_with_the_same_settings():
    def shipped(kind, backend):  # built-ins only: other tests register custom components for one backend
        return {
            n: c
            for n, c in registry.components(kind, backend).items()
            if c.factory.__module__.startswith(("ppvae.backends.", "ppvae.model."))
        }

    for kind in registry.KINDS:
        pyro_side = shipped(kind, "pyro")
        numpyro_side = shipped(kind, "numpyro")
        assert pyro_side, kind
        assert set(pyro_side) == set(numpyro_side), kind
        for name in pyro_side:
            assert dict(pyro_side[name].defaults) == dict(numpyro_side[name].defaults), (kind, name)
            if kind == "likelihood":
                assert pyro_side[name].factory.support == numpyro_side[name].factory.support


# ------------------------------------------------------------------------------ equivalence
CASES = [
    ("mlp", "mlp", "bernoulli", (6, 5), {}),
    ("mlp", "linear", "normal", (7,), {"scale_mode": "per_dim", "scale": 0.8}),
    ("conv", "conv", "bernoulli", (12, 12), {}),
    ("mlp", "mlp", "continuous_bernoulli", (6, 5), {}),
    ("conv", "conv", "normal", (1, 8, 8), {"scale_mode": "shared"}),
    # A 3-channel feature map, then transposed convolutions of exactly 8 and 4 filters.
    ("conv", "conv-map", "bernoulli", (12, 12), {}),
]


def _pair(encoder, decoder, likelihood, shape, lik_options, n_data=1000):
    decoder_options = {
        "mlp": {"hidden": [16]},
        "conv": {"channels": [8, 4]},
        "linear": {},
        "conv-map": {"channels": [8, 4], "map_channels": 3},
    }[decoder]
    spec = ModelSpec(
        latent_dim=3,
        encoder=encoder,
        decoder=decoder.removesuffix("-map"),
        likelihood=likelihood,
        likelihood_options=lik_options,
        encoder_options={"hidden": [16]} if encoder == "mlp" else {"channels": [4, 8], "hidden": [16]},
        decoder_options=decoder_options,
    )
    torch.manual_seed(0)
    tvae = pb.build_vae(spec, shape, dataset_size=n_data, register_params=False)
    # Perturb every parameter so biases and scales are not at their trivial initial values.
    with torch.no_grad():
        for p in tvae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    jvae = npb.build_vae(spec, shape, jax.random.PRNGKey(0), dataset_size=n_data)
    state = {k: v.detach().numpy() for k, v in tvae.state_dict().items()}
    params = npb.params_from_torch(jvae, state)
    return tvae, jvae, params


@pytest.mark.parametrize("encoder,decoder,likelihood,shape,lik_options", CASES)
@pytest.mark.parametrize("estimator", ["meanfield", "trace"])
def test_same_weights_and_noise_give_the_same_elbo_terms(encoder, decoder, likelihood, shape, lik_options, estimator):
    tvae, jvae, params = _pair(encoder, decoder, likelihood, shape, lik_options)
    rng = np.random.default_rng(1)
    x = (
        (rng.random((8, *shape)) < 0.4).astype(np.float32)
        if likelihood != "normal"
        else rng.normal(size=(8, *shape)).astype(np.float32)
    )
    eps = rng.normal(size=(8, 3)).astype(np.float32)
    beta = 0.7
    # The same draw of z in both: z = loc + scale * eps, from each backend's own encoder.
    with torch.no_grad():
        loc, scale = tvae.encoder(torch.as_tensor(x))
        z_t = loc + scale * torch.as_tensor(eps)
    from pyro import poutine

    t = pb.terms(
        poutine.condition(tvae.model, {"z": z_t}),
        poutine.condition(tvae.guide, {"z": z_t}),
        torch.as_tensor(x),
        beta=beta,
        estimator=estimator,
    )
    m = jvae.with_params(params)
    loc_j, scale_j = m["encoder"](jnp.asarray(x))
    z_j = loc_j + scale_j * jnp.asarray(eps)
    model = handlers.condition(handlers.substitute(jvae.model, data=params), {"z": z_j})
    guide = handlers.condition(handlers.substitute(jvae.guide, data=params), {"z": z_j})
    j = npb.terms(model, guide, jax.random.PRNGKey(0), jnp.asarray(x), beta, estimator=estimator)
    for name in ("loss", "reconstruction", "kl"):
        a, b = float(getattr(t, name).detach()), float(getattr(j, name))
        # float32 on both sides; 1e-5 relative (the bound), with a tiny absolute floor
        # for terms near zero.
        assert abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-5, (name, a, b)
    assert t.data_scale == pytest.approx(j.data_scale)
    assert float(j.beta) == pytest.approx(beta)


@pytest.mark.parametrize("map_channels,widths", [(None, [8, 4, 4, 1]), (3, [3, 8, 4, 1])])
def test_conv_decoder_filters_follow_map_channels(map_channels, widths):
    """Feature-map channels, then each transposed convolution's filters, then the output conv."""
    from ppvae.errors import UsageError

    options = {"channels": [8, 4], "map_channels": map_channels}
    tdec = pb.nets.ConvDecoder(2, (12, 12), **options)
    convs = [m for m in tdec.deconv if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))]
    assert [tdec.start[0]] + [m.out_channels for m in convs] == widths
    jdec = npb.nets.ConvDecoder(2, (12, 12), **options, key=jax.random.PRNGKey(0))
    jconvs = [m for m in jdec.deconv.layers if hasattr(m, "out_channels")]
    assert [jdec.start[0]] + [m.out_channels for m in jconvs] == widths
    assert jdec(jnp.zeros((5, 2))).shape == (5, 12, 12)
    with pytest.raises(UsageError, match="map_channels must be a positive integer"):
        pb.nets.ConvDecoder(2, (12, 12), channels=[8], map_channels=0)


def test_continuous_bernoulli_matches_torch():
    from ppvae.backends.numpyro.distributions import ContinuousBernoulli as ContinuousBernoulliDistribution

    logits = np.array([-30.0, -3.0, -0.01, 0.0, 0.002, 1.5, 25.0], dtype=np.float32)
    x = np.array([0.0, 0.2, 0.5, 0.9, 1.0, 0.33, 0.7], dtype=np.float32)
    ref = torch.distributions.ContinuousBernoulli(logits=torch.as_tensor(logits))
    ours = ContinuousBernoulliDistribution(jnp.asarray(logits))
    np.testing.assert_allclose(
        np.asarray(ours.log_prob(jnp.asarray(x))), ref.log_prob(torch.as_tensor(x)).numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(ours.mean), ref.mean.numpy(), rtol=1e-4, atol=1e-5)
    grads = jax.grad(lambda lg: ContinuousBernoulliDistribution(lg).log_prob(jnp.asarray(x)).sum())(jnp.asarray(logits))
    assert np.isfinite(np.asarray(grads)).all()


def test_iwae_with_one_sample_equals_the_elbo_and_is_per_datapoint():
    _, jvae, params = _pair("mlp", "mlp", "bernoulli", (6, 5), {})
    x = jnp.asarray((np.random.default_rng(0).random((8, 6, 5)) < 0.4).astype(np.float32))
    model = handlers.substitute(jvae.model, data=params)
    guide = handlers.substitute(jvae.guide, data=params)
    key = jax.random.PRNGKey(3)
    a = npb.terms(model, guide, key, x, 1.0, estimator="iwae", num_particles=1)
    b = npb.terms(model, guide, key, x, 1.0, estimator="trace", num_particles=1)
    assert float(a.loss) == float(b.loss)
    K = 40
    lw = npb.log_weights(model, guide, key, x, 1.0, num_particles=K)
    per_point = jax.scipy.special.logsumexp(lw, 0) - math.log(K)
    c = npb.terms(model, guide, key, x, 1.0, estimator="iwae", num_particles=K)
    assert float(c.loss) == pytest.approx(-float(per_point.mean()), rel=1e-5)


# ------------------------------------------------------------------------------- training
def fit_np(out, digits, **extra):
    overrides = {
        **FAST,
        "data.source": str(digits),
        "model.latent_dim": 2,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.backend": "numpyro",
        **extra,
    }
    return ppvae.fit(out=out, overrides=overrides, pictures=False)


def test_the_epoch_compiles_once_and_never_again(tmp_path, digits_npy):
    from ppvae.backends.numpyro.trainer import Trainer
    from ppvae.api import build_config, resolve_config
    from ppvae.data import load_dataset

    cfg = resolve_config(
        build_config(
            overrides={
                **FAST,
                "data.source": str(digits_npy),
                "train.backend": "numpyro",
                "train.epochs": 4,
                "train.batch_size": 64,
            }
        )
    )
    ds = load_dataset(cfg.data, "bernoulli", "unit_interval")
    trainer = Trainer(cfg, ds, tmp_path, progress=False)
    trainer.fit()
    assert trainer.state.epoch == 4
    assert trainer.compilations == 1  # traced (compiled) once for 4 epochs
    assert set(trainer._programs) == {"epoch", "step"}  # 480 = 7 * 64 + 32: one extra small-batch step


def test_numpyro_runs_are_reproducible_and_resumable(tmp_path, digits_npy):
    a = fit_np(tmp_path / "a", digits_npy)
    b = fit_np(tmp_path / "b", digits_npy)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in recs]  # noqa: E731
    assert strip(a.metrics()) == strip(b.metrics())
    overrides = {
        **FAST,
        "data.source": str(digits_npy),
        "model.latent_dim": 2,
        "train.epochs": 2,
        "train.batch_size": 64,
        "train.backend": "numpyro",
    }
    ppvae.fit(out=tmp_path / "cut", overrides=overrides, stop_after_steps=1, pictures=False)
    resumed = ppvae.fit(resume=tmp_path / "cut", pictures=False)
    assert strip(resumed.metrics()) == strip(a.metrics())
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a.path / "checkpoint.safetensors")), load_file(str(resumed.path / "checkpoint.safetensors"))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa if k.startswith("params."))


def test_metrics_identity_and_run_api_on_numpyro(tmp_path, digits_npy):
    run = fit_np(tmp_path / "r", digits_npy, **{"train.beta": 0.5})
    for r in run.metrics():
        assert r["loss"] == pytest.approx(r["reconstruction"] + 0.5 * r["kl"], rel=1e-6)
    again = ppvae.load(run.path)
    x = again.heldout()[:10]
    loc, scale = again.encode(x)
    assert loc.shape == (10, 2) and (scale > 0).all()
    np.testing.assert_allclose(again.decode(loc), again.reconstruct(x), rtol=1e-5, atol=1e-6)
    assert again.sample(5).shape == (5, 28, 28)
    ev = again.evaluate(num_samples=10)
    assert {
        "heldout_elbo",
        "heldout_log_px",
        "num_samples",
        "reconstruction",
        "kl",
        "active_units",
        "bits_per_dim",
    } <= set(ev)


@pytest.mark.parametrize(
    "likelihood,extra",
    [
        ("bernoulli", {}),
        ("continuous_bernoulli", {"data.binarize": "none"}),
        ("normal", {"data.binarize": "none", "data.standardize": True}),
    ],
)
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_every_component_trains_on_numpyro(tmp_path, digits_npy, likelihood, extra, net):
    run = ppvae.fit(
        out=tmp_path / "r",
        likelihood=likelihood,
        encoder=net,
        decoder=net,
        latent_dim=2,
        epochs=1,
        batch_size=100,
        data=str(digits_npy),
        backend="numpyro",
        pictures=False,
        overrides={"train.eval_num_samples": 5, "train.device": "cpu", **extra},
    )
    record = run.metrics()[0]
    assert all(math.isfinite(record[k]) for k in ("loss", "reconstruction", "kl", "heldout_elbo"))


def test_ppca_iwae_approaches_exact_log_px_on_numpyro(tmp_path):
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(6, 2)), rng.normal(size=6)
    x = (rng.normal(size=(2000, 2)) @ W.T + b + 0.5 * rng.normal(size=(2000, 6))).astype(np.float32)
    np.save(tmp_path / "ppca.npy", x)
    run = ppvae.fit(
        out=tmp_path / "ppca",
        backend="numpyro",
        data=str(tmp_path / "ppca.npy"),
        likelihood="normal",
        decoder="linear",
        latent_dim=2,
        epochs=60,
        batch_size=256,
        lr=0.02,
        pictures=False,
        overrides={"model.encoder_options.hidden": [], "train.eval_num_samples": 1000, "train.device": "cpu"},
    )
    from ppvae.backends.numpyro.evaluation import exact_log_px

    held = run.heldout()
    trained = run.trained
    iwae = trained.per_point_log_px(held, 1000)
    iwae10 = trained.per_point_log_px(held, 10)
    exact = exact_log_px(trained.vae, trained.params, held)
    gap = exact - iwae
    se = gap.std(ddof=1) / math.sqrt(len(gap))  # standard error of the paired mean difference
    # IWAE(1000) <= exact log p(x) + 4 standard errors, and within 0.5 % of it.
    assert gap.mean() > -4 * se
    assert abs(gap.mean()) < 0.005 * abs(exact.mean())
    rise = iwae - iwae10
    assert rise.mean() > -4 * rise.std(ddof=1) / math.sqrt(len(rise))  # IWAE(10) <= IWAE(1000) + MC error


def test_numpyro_svi_takes_the_model_and_guide():
    import optax
    from numpyro.infer import SVI

    _, vae, _ = _pair("mlp", "mlp", "bernoulli", (6, 5), {})
    x = jnp.asarray((np.random.default_rng(0).random((64, 6, 5)) < 0.4).astype(np.float32))
    svi = SVI(vae.model, vae.guide, optax.adam(1e-2), npb.VAEObjective("iwae", num_particles=3))
    state = svi.init(jax.random.PRNGKey(0), x)
    update = jax.jit(svi.update)
    losses = []
    for _ in range(60):
        state, loss = update(state, x)
        losses.append(float(loss))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_a_missing_numpyro_install_gets_an_install_hint(monkeypatch):
    import builtins
    import sys

    from ppvae.errors import BackendUnavailableError

    monkeypatch.delitem(sys.modules, "ppvae.backends.numpyro", raising=False)
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "ppvae.backends.numpyro" or name.startswith("numpyro"):
            raise ModuleNotFoundError("No module named 'numpyro'", name="numpyro")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(
        "importlib.import_module",
        lambda name, package=None: fake_import(name) if "numpyro" in name else real_import(name),
    )
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ppvae\[numpyro\]'"):
        registry.load_backend("numpyro")


def test_a_diverging_numpyro_fit_stops_with_the_message_both_backends_give(tmp_path, digits_npy):
    # One message for a non-finite loss (ppvae.inference.training.nonfinite_error) on both backends.
    from ppvae.errors import TrainingError

    with pytest.raises(TrainingError) as info:
        ppvae.fit(
            out=tmp_path / "r",
            backend="numpyro",
            data=str(digits_npy),
            likelihood="normal",
            lr=1e4,
            latent_dim=2,
            epochs=2,
            pictures=False,
            overrides=FAST,
        )
    message = str(info.value)
    assert message.startswith("training stopped: the loss became non-finite at step ")
    assert "(epoch 1)" in message and "--lr, now 10000" in message and message.endswith("then --resume")
