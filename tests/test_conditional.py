"""Conditional VAE (``model.conditional = true``): labels fed to the encoder and the decoder.

One short conditional run per backend (module fixtures) serves most tests: the API and
the CLI with labels, reloads, the sample-by-label check and the compile-once check.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from ppvae.cli import cli
from ppvae.spec.config import Config, ModelSpec
from ppvae.errors import DataError, UsageError

from conftest import FAST, embedded_digits

# Short training that still learns the labels: 2 epochs of 30 steps (480 training digits,
# batch 16) at a high learning rate.
COND = {
    **FAST,
    "model.latent_dim": 2,
    "model.conditional": True,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.lr": 1e-2,
}


def _fit(out, digits, backend, **kwargs):
    return ppvae.fit(out=out, overrides={**COND, "data.source": str(digits), "train.backend": backend}, **kwargs)


@pytest.fixture(scope="module")
def pyro_run(tmp_path_factory, digits_npy):
    return _fit(tmp_path_factory.mktemp("cond") / "pyro", digits_npy, "pyro")


@pytest.fixture(scope="module")
def numpyro_fit(tmp_path_factory, digits_npy):
    """The NumPyro run and the Trainer that trained it (to count its compilations)."""
    pytest.importorskip("numpyro")
    from ppvae.backends.numpyro import trained as np_trained

    made = []

    class Recording(np_trained.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np_trained, "Trainer", Recording)
        run = _fit(tmp_path_factory.mktemp("cond") / "numpyro", digits_npy, "numpyro", pictures=False)
    return run, made[0]


@pytest.fixture(params=["pyro", "numpyro"])
def cond_run(request):
    if request.param == "pyro":
        return request.getfixturevalue("pyro_run")
    return request.getfixturevalue("numpyro_fit")[0]


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------ spec
def test_the_spec_validates_and_records_the_conditional_keys():
    cfg = Config().with_overrides({"model.conditional": True, "model.num_classes": 10})
    assert Config.from_toml_string(cfg.to_toml_string()) == cfg
    with pytest.raises(UsageError, match="only used by a conditional model"):
        ModelSpec(num_classes=3)
    with pytest.raises(UsageError, match="non-negative integer"):
        ModelSpec(conditional=True, num_classes=-1)
    with pytest.raises(UsageError, match="true or false"):
        ModelSpec(conditional="yes")
    # The class count fixes the parameter shapes: a different count is a different checkpoint.
    assert cfg.fingerprint() != cfg.with_overrides({"model.num_classes": 9}).fingerprint()


def test_unconditional_specs_keep_their_fingerprint():
    # Values of the fingerprint before the conditional keys existed: run folders written
    # then still load.
    assert Config().fingerprint() == "eca2bafa91b5a9c4"
    assert (
        Config().with_overrides({"model.latent_dim": 2, "model.encoder_options.hidden": [64]}).fingerprint()
        == "0599e49adcd95e56"
    )


# ------------------------------------------------------------------------- model contract
def test_labels_are_required_by_a_conditional_model_and_refused_by_another():
    import torch

    from ppvae.backends import pyro as pb

    x = torch.rand(4, 6).round()
    plain = pb.build_vae(ModelSpec(latent_dim=2), (6,), support_check=False)
    with pytest.raises(UsageError, match="unconditional") as info:
        plain.model(x, y=torch.zeros(4, dtype=torch.long))
    _one_line(info)
    cond = pb.build_vae(ModelSpec(latent_dim=2, conditional=True, num_classes=3), (6,), support_check=False)
    for fn in (cond.model, cond.guide):
        with pytest.raises(UsageError, match="conditional on 3 classes") as info:
            fn(x)
        _one_line(info)
    with pytest.raises(UsageError, match="num_classes = 0"):
        pb.build_vae(ModelSpec(latent_dim=2, conditional=True), (6,), support_check=False)


def test_labels_are_required_and_refused_on_numpyro_too():
    jax = pytest.importorskip("jax")
    from numpyro import handlers

    from ppvae.backends import numpyro as npb

    x = np.ones((4, 6), np.float32)
    tiny = {"encoder_options": {"hidden": [4]}, "decoder_options": {"hidden": [4]}}
    plain = npb.build_vae(ModelSpec(latent_dim=2, **tiny), (6,), jax.random.PRNGKey(0))
    with pytest.raises(UsageError, match="unconditional"):
        handlers.seed(plain.model, 0)(x, y=np.zeros(4, np.int32))
    cond = npb.build_vae(ModelSpec(latent_dim=2, conditional=True, num_classes=3, **tiny), (6,), jax.random.PRNGKey(0))
    with pytest.raises(UsageError, match="conditional on 3 classes"):
        handlers.seed(cond.guide, 0)(x)


# Flat data, images through an mlp encoder ("flat": the label appended to the flattened
# image) and through a conv encoder ("channels": the label as constant image planes).
CASES = [
    ("mlp", "linear", "normal", (7,), {"scale_mode": "per_dim", "scale": 0.8}, "flat"),
    ("mlp", "mlp", "bernoulli", (6, 5), {}, "flat"),
    ("conv", "conv", "bernoulli", (12, 12), {}, "channels"),
    # (C0, H, W) images; the encoder's input is (1 + 3, 12, 12) as above, so its compiled ops are reused
    ("conv", "mlp", "normal", (1, 12, 12), {"scale_mode": "shared"}, "channels"),
]


def _pair(encoder, decoder, likelihood, shape, lik_options, classes=3):
    jax = pytest.importorskip("jax")
    import torch

    from ppvae.backends import numpyro as npb
    from ppvae.backends import pyro as pb

    spec = ModelSpec(
        latent_dim=3,
        encoder=encoder,
        decoder=decoder,
        likelihood=likelihood,
        likelihood_options=lik_options,
        conditional=True,
        num_classes=classes,
        encoder_options={"hidden": [16]} if encoder == "mlp" else {"channels": [4, 8], "hidden": [16]},
        decoder_options={"hidden": [16]} if decoder == "mlp" else ({"channels": [8, 4]} if decoder == "conv" else {}),
    )
    torch.manual_seed(0)
    tvae = pb.build_vae(spec, shape, dataset_size=1000, register_params=False)
    with torch.no_grad():  # move every weight off its initial value
        for p in tvae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    jvae = npb.build_vae(spec, shape, jax.random.PRNGKey(0), dataset_size=1000)
    params = npb.params_from_torch(jvae, {k: v.detach().numpy() for k, v in tvae.state_dict().items()})
    return tvae, jvae, params


@pytest.mark.parametrize("encoder,decoder,likelihood,shape,lik_options,layout", CASES)
@pytest.mark.parametrize("estimator", ["meanfield", "trace"])
def test_torch_and_jax_give_the_same_conditional_elbo_terms(
    encoder, decoder, likelihood, shape, lik_options, layout, estimator
):
    import jax
    import jax.numpy as jnp
    import torch
    from numpyro import handlers
    from pyro import poutine

    from ppvae.backends import numpyro as npb
    from ppvae.backends import pyro as pb

    tvae, jvae, params = _pair(encoder, decoder, likelihood, shape, lik_options)
    assert tvae.label_layout == jvae.label_layout == layout
    rng = np.random.default_rng(1)
    x = (
        (rng.random((8, *shape)) < 0.4).astype(np.float32)
        if likelihood != "normal"
        else rng.normal(size=(8, *shape)).astype(np.float32)
    )
    y = np.array([0, 1, 2, 0, 1, 2, 2, 1])
    eps = rng.normal(size=(8, 3)).astype(np.float32)
    beta = 0.7
    with torch.no_grad():
        yt = torch.as_tensor(y)
        loc, scale = tvae.encoder(tvae.encoder_input(torch.as_tensor(x), yt))
        z_t = loc + scale * torch.as_tensor(eps)
    t = pb.terms(
        poutine.condition(tvae.model, {"z": z_t}),
        poutine.condition(tvae.guide, {"z": z_t}),
        torch.as_tensor(x),
        beta=beta,
        y=yt,
        estimator=estimator,
    )
    m = jvae.with_params(params)
    loc_j, scale_j = m["encoder"](jvae.encoder_input(jnp.asarray(x), jnp.asarray(y)))
    z_j = loc_j + scale_j * jnp.asarray(eps)
    model = handlers.condition(handlers.substitute(jvae.model, data=params), {"z": z_j})
    guide = handlers.condition(handlers.substitute(jvae.guide, data=params), {"z": z_j})
    j = npb.terms(model, guide, jax.random.PRNGKey(0), jnp.asarray(x), beta, y=jnp.asarray(y), estimator=estimator)
    for name in ("loss", "reconstruction", "kl"):
        a, b = float(getattr(t, name).detach()), float(getattr(j, name))
        # float32 on both sides: 1e-5 relative, with a small absolute floor for terms near 0.
        assert abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-5, (name, a, b)
    # Other labels change the numbers by more than the backends' tolerance: the networks see y.
    other = pb.terms(
        poutine.condition(tvae.model, {"z": z_t}),
        poutine.condition(tvae.guide, {"z": z_t}),
        torch.as_tensor(x),
        beta=beta,
        y=(yt + 1) % 3,
        estimator=estimator,
    )
    a, b = float(other.reconstruction.detach()), float(t.reconstruction.detach())
    assert abs(a - b) > 1e-5 * max(abs(a), abs(b)) + 1e-5, (a, b)


def test_exact_log_p_x_given_y_bounds_the_iwae_estimate_on_both_backends():
    import torch

    from ppvae.backends.numpyro.evaluation import exact_log_px as exact_np
    from ppvae.backends.pyro.evaluation import exact_log_px, log_px_iwae

    tvae, jvae, params = _pair("mlp", "linear", "normal", (7,), {"scale_mode": "per_dim", "scale": 0.8})
    x = np.random.default_rng(2).normal(size=(40, 7)).astype(np.float32)
    y = np.arange(40) % 3
    exact = exact_log_px(tvae, torch.as_tensor(x), torch.as_tensor(y)).numpy()
    np.testing.assert_allclose(exact_np(jvae, params, x, y), exact, rtol=1e-6)
    iwae = log_px_iwae(tvae, torch.as_tensor(x), 200, y=torch.as_tensor(y)).numpy()
    gap = exact - iwae
    # IWAE is a lower bound of log p(x|y): the mean gap is >= 0 up to 4 standard errors.
    assert gap.mean() > -4 * gap.std(ddof=1) / math.sqrt(len(gap))
    # Exact for the labels given: other labels give other values.
    assert not np.allclose(exact_log_px(tvae, torch.as_tensor(x), torch.as_tensor((y + 1) % 3)).numpy(), exact)


# -------------------------------------------------------------------------------- training
def test_a_conditional_fit_records_its_classes_and_reloads_without_data(cond_run, tmp_path):
    assert cond_run.config.model.conditional and cond_run.config.model.num_classes == 10
    assert cond_run.num_classes == 10
    records = cond_run.metrics()
    assert len(records) == 2 and all(math.isfinite(r["heldout_elbo"]) for r in records)
    for r in records:  # the β identity holds with labels too
        assert r["loss"] == pytest.approx(r["reconstruction"] + r["kl"], rel=1e-5)
    # A copy whose data source is gone still decodes and samples: config.toml has C = 10.
    copy = tmp_path / "copy"
    shutil.copytree(cond_run.path, copy)
    text = (copy / "config.toml").read_text()
    (copy / "config.toml").write_text(text.replace(str(cond_run.config.data.source), str(tmp_path / "gone.npz")))
    again = ppvae.load(copy)
    assert again.sample(4, labels=7).shape == (4, 28, 28)
    assert again.decode(np.zeros((3, 2)), labels=[0, 1, 2]).shape == (3, 28, 28)


def test_a_reloaded_conditional_run_gives_identical_numbers(cond_run):
    again = ppvae.load(cond_run.path)
    ev = again.evaluate(num_samples=cond_run.config.train.eval_num_samples)
    for key in ("heldout_log_px", "heldout_elbo", "reconstruction", "kl"):
        assert ev[key] == cond_run.summary["evaluation"][key], key
    x, y = cond_run.heldout()[:16], cond_run.dataset().heldout_labels[:16]
    for a, b in zip(cond_run.encode(x, y), again.encode(x, y)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cond_run.sample(6, seed=3, labels=2), again.sample(6, seed=3, labels=2))


def test_every_run_method_takes_labels(cond_run):
    x, y = cond_run.heldout()[:10], cond_run.dataset().heldout_labels[:10]
    loc, scale = cond_run.encode(x, y)
    assert loc.shape == (10, 2) and (scale > 0).all()
    np.testing.assert_allclose(cond_run.reconstruct(x, y), cond_run.decode(loc, y), rtol=1e-5, atol=1e-6)
    assert not np.allclose(cond_run.decode(loc, 3), cond_run.decode(loc, 5))
    balanced = cond_run.sample(12)  # no labels: the classes take turns
    np.testing.assert_array_equal(balanced[3], cond_run.sample(12, labels=np.arange(12) % 10)[3])
    ev = cond_run.evaluate(x, labels=y, num_samples=5)
    assert math.isfinite(ev["heldout_log_px"]) and ev["num_points"] == 10
    for call in (
        lambda: cond_run.encode(x),
        lambda: cond_run.evaluate(x, num_samples=5),
        lambda: cond_run.reconstruct(x),
    ):
        with pytest.raises(UsageError, match="needs the class labels") as info:
            call()
        _one_line(info)
    with pytest.raises(DataError, match=r"\[0, 10\)") as info:
        cond_run.sample(3, labels=10)
    _one_line(info)
    with pytest.raises(DataError, match="one label per datapoint"):
        cond_run.decode(loc, labels=[1, 2])


def test_samples_follow_their_label(cond_run):
    ds = cond_run.dataset()
    means = np.stack([ds.train[ds.train_labels == c].mean(0) for c in range(10)])
    labels = np.repeat(np.arange(10), 20)
    samples = cond_run.sample(len(labels), seed=0, labels=labels)
    guess = ((samples[:, None] - means[None]) ** 2).sum((-1, -2)).argmin(1)
    accuracy = float((guess == labels).mean())
    # Nearest-class-mean classification of the samples. If the samples ignored their label,
    # the guess would be independent of it and, with the 10 labels balanced, right with
    # probability exactly 1/10: accuracy 0.10 with standard error sqrt(0.1 * 0.9 / 200) =
    # 0.021. 0.30 is 9 standard errors above chance (the same classifier gets 0.77 on the
    # real held-out digits; these runs' samples score 0.6-0.8).
    assert accuracy > 0.30, accuracy


def test_the_samples_picture_has_one_row_per_class(pyro_run):
    from ppvae.plotting.run_pictures import samples_by_class

    assert (pyro_run.path / "samples.png").is_file() and (pyro_run.path / "reconstructions.png").is_file()
    # The picture's rows: 7 samples (64 / 10, rounded up) of class 0, then of class 1, ...
    rows = samples_by_class(pyro_run, 7)
    np.testing.assert_array_equal(rows, pyro_run.sample(70, labels=np.repeat(np.arange(10), 7)))


def test_the_numpyro_epoch_with_labels_compiles_once(numpyro_fit):
    _, trainer = numpyro_fit
    assert trainer.state.epoch == 2
    assert trainer.compilations == 1  # one trace of the scanned epoch, reused by the second epoch
    assert trainer.y_train.dtype == np.int32 and trainer.y_train.shape == (480,)


def test_a_resumed_conditional_run_matches_an_uninterrupted_one(pyro_run, tmp_path, digits_npy):
    ppvae.fit(
        out=tmp_path / "cut", overrides={**COND, "data.source": str(digits_npy)}, stop_after_steps=7, pictures=False
    )
    resumed = ppvae.fit(resume=tmp_path / "cut", pictures=False)
    assert resumed.config.model.num_classes == 10
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in recs]  # noqa: E731
    assert strip(resumed.metrics()) == strip(pyro_run.metrics())


def test_data_without_labels_or_with_labels_out_of_range_stop_the_fit(tmp_path, digits_npy):
    np.save(tmp_path / "unlabelled.npy", embedded_digits(100))
    with pytest.raises(DataError, match="needs class labels") as info:
        ppvae.fit(out=tmp_path / "a", overrides={**COND, "data.source": str(tmp_path / "unlabelled.npy")})
    _one_line(info)
    assert not (tmp_path / "a").exists()
    with pytest.raises(DataError, match=r"must lie in \[0, 5\)") as info:
        ppvae.fit(out=tmp_path / "b", overrides={**COND, "data.source": str(digits_npy), "model.num_classes": 5})
    _one_line(info)


# ------------------------------------------------------------------------------------- CLI
def test_cli_sample_decode_encode_with_labels(pyro_run, tmp_path):
    runner = CliRunner()
    run = str(pyro_run.path)

    def ok(*args):
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result

    ok("sample", run, "--label", "3", "-n", "8", "--out", str(tmp_path / "threes.png"))
    assert (tmp_path / "threes.png").stat().st_size > 0
    grid = ok("sample", run, "-n", "20", "--out", str(tmp_path / "grid.npy"))
    assert "wrote 20 samples" in grid.output  # 2 per class, one row per class
    assert np.load(tmp_path / "grid.npy").shape == (20, 28, 28)
    ok("sample", run, "-n", "20", "--out", str(tmp_path / "grid.png"))
    ok("encode", run, "--out", str(tmp_path / "codes.npz"))
    with np.load(tmp_path / "codes.npz") as f:
        codes, labels = f["loc"], f["labels"]
    # decode reuses the labels that encode stored; --label decodes every code as one class
    ok("decode", run, "--latents", str(tmp_path / "codes.npz"), "--out", str(tmp_path / "back.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "back.npy"), pyro_run.decode(codes, labels), rtol=1e-6)
    np.save(tmp_path / "z.npy", codes[:5])
    ok("decode", run, "--latents", str(tmp_path / "z.npy"), "--label", "3", "--out", str(tmp_path / "z3.npy"))
    ok("reconstruct", run, "-n", "4", "--out", str(tmp_path / "recon.png"))
    ok("evaluate", run, "-k", "5", "--json")
    for args, code, words in [
        (["sample", run, "--label", "42", "--out", str(tmp_path / "x.png")], 1, "[0, 10)"),
        (["decode", run, "--latents", str(tmp_path / "z.npy"), "--out", str(tmp_path / "x.npy")], 2, "--label"),
        (["diagnose", run, "-q"], 2, "conditional"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == code, result.output
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_cli_label_on_an_unconditional_run_is_refused(tiny_run, tmp_path):
    result = CliRunner().invoke(cli, ["sample", str(tiny_run), "--label", "1", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 2
    assert "not a conditional run" in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(UsageError, match="not conditional"):
        ppvae.load(tiny_run).decode(np.zeros((2, 2)), labels=1)


def test_compare_trains_a_conditional_spec(tmp_path, digits_npy):
    from ppvae.analysis.compare import compare

    overrides = {**COND, "data.source": str(digits_npy), "train.epochs": 1}
    result = compare(None, backends="pyro", elbos="meanfield", seeds="0", out=tmp_path / "cmp", overrides=overrides)
    assert not result.failed_runs
    assert "conditional" in result.to_dict()["protocol"]["note"]
