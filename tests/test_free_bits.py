"""Free bits: each latent dimension's KL floored at λ nats in the ELBO's KL term, on both backends."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ppvae.backends import pyro as pb
from ppvae.cli import cli
from ppvae.errors import UsageError
from ppvae.spec.config import Config, ModelSpec

LATENT = 3


def spec(**extra) -> ModelSpec:
    return ModelSpec(latent_dim=LATENT, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]}, **extra)


def binary_batch(batch=16, shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, *shape, generator=g) < 0.4).float()


def pyro_terms(model_spec, x, **kw):
    torch.manual_seed(1)
    vae = pb.build_vae(model_spec, tuple(x.shape[1:]), dataset_size=1000, register_params=False)
    out = []
    for free_bits in kw.pop("free_bits"):
        torch.manual_seed(7)  # the same draw of z for each λ
        with torch.no_grad():
            out.append(
                pb.terms(vae.model, vae.guide, x, beta=kw["beta"], estimator=kw["estimator"], free_bits=free_bits)
            )
    return out


def numpyro_terms(model_spec, x, **kw):
    jax = pytest.importorskip("jax")
    from numpyro import handlers

    from ppvae.backends import numpyro as npb

    vae = npb.build_vae(model_spec, tuple(x.shape[1:]), jax.random.PRNGKey(0), dataset_size=1000)
    params = npb.initial_params(vae)
    model, guide = handlers.substitute(vae.model, data=params), handlers.substitute(vae.guide, data=params)
    xj = jax.numpy.asarray(x.numpy())
    return [
        npb.terms(model, guide, jax.random.PRNGKey(3), xj, kw["beta"], estimator=kw["estimator"], free_bits=fb)
        for fb in kw.pop("free_bits")
    ]


@pytest.mark.parametrize("backend_terms", [pyro_terms, numpyro_terms], ids=["pyro", "numpyro"])
@pytest.mark.parametrize("estimator", ["meanfield", "trace"])
@pytest.mark.parametrize("prior", ["normal", "laplace"])  # closed-form KL, and the sampled one
def test_the_floor_replaces_only_dimensions_below_it(backend_terms, estimator, prior):
    beta, x = 2.0, binary_batch()
    plain, tiny, huge = backend_terms(spec(prior=prior), x, beta=beta, estimator=estimator, free_bits=[0.0, 1e-12, 1e3])
    # Same draws. With the closed-form KL (a Normal prior, meanfield) every dimension's KL is
    # positive, so a floor below all of them leaves loss = reconstruction + β·KL (each
    # dimension's batch mean, summed, is the batch mean of the summed KL: float32 rounding
    # only). A sampled per-dimension KL can average below 0 over a batch; the floor lifts it.
    if prior == "normal" and estimator == "meanfield":
        assert float(tiny.loss) == pytest.approx(float(plain.loss), rel=1e-6)
    else:
        assert float(tiny.loss) >= float(plain.loss) * (1 - 1e-6)
    # A floor above every dimension's KL makes the KL term β·D·λ exactly; the reported KL stays the true one.
    assert float(huge.loss) == pytest.approx(float(plain.reconstruction) + beta * LATENT * 1e3, rel=1e-6)
    for t in (tiny, huge):
        assert float(t.kl) == float(plain.kl) and float(t.reconstruction) == float(plain.reconstruction)


def test_a_dimension_under_the_floor_gets_no_push_towards_the_prior():
    x = binary_batch()
    torch.manual_seed(1)
    vae = pb.build_vae(spec(), tuple(x.shape[1:]), dataset_size=1000, register_params=False)
    head = [p for name, p in vae.named_parameters() if name.startswith("encoder") and p.dim() == 2][-1]
    grads = {}
    for free_bits in (0.0, 1e3):
        torch.manual_seed(7)
        vae.zero_grad()
        pb.terms(vae.model, vae.guide, x, beta=1.0, estimator="meanfield", free_bits=free_bits).loss.backward()
        grads[free_bits] = head.grad.clone()
        vae.zero_grad()
        torch.manual_seed(7)
        pb.terms(vae.model, vae.guide, x, beta=1e-30, estimator="meanfield").loss.backward()
        grads["reconstruction only"] = head.grad.clone()
    # Floored everywhere, the encoder's gradient is the reconstruction's alone.
    torch.testing.assert_close(grads[1e3], grads["reconstruction only"])
    assert not torch.allclose(grads[0.0], grads["reconstruction only"])


def test_what_free_bits_cannot_apply_to_is_refused_in_one_line(tmp_path):
    cases = [
        (
            ["--free-bits", "0.5", "--elbo", "iwae"],
            'train.free_bits floors the KL term of the ELBO, which train.elbo = "iwae"',
        ),
        (
            ["--free-bits", "0.5", "--guide", "lowrank"],
            'train.free_bits floors the KL of each latent dimension, which needs model.guide = "diagonal"',
        ),
        (["--free-bits", "-1"], "train.free_bits must be a non-negative number"),
    ]
    for args, start in cases:
        result = CliRunner().invoke(cli, ["fit", *args, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {start}"), result.output
    assert not (tmp_path / "r").exists()
    # A prior that does not factorize over the dimensions (a mixture) is found when the terms are formed.
    x = binary_batch()
    with pytest.raises(UsageError, match="the prior must factorize over them .* this prior is MixtureSameFamily"):
        pyro_terms(spec(prior="mog"), x, beta=1.0, estimator="meanfield", free_bits=[0.5])


@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_training_minimizes_the_floored_objective(tmp_path, digits_npy, backend):
    import ppvae
    from conftest import FAST

    run = ppvae.fit(
        data=str(digits_npy),
        out=tmp_path / "run",
        backend=backend,
        latent_dim=LATENT,
        epochs=1,
        free_bits=1e3,
        overrides={**FAST, "train.eval_num_samples": 2},
        pictures=False,
    )
    record = run.metrics()[0]
    # Every dimension is far below a 1000-nat floor: each step's loss is reconstruction + D·λ.
    assert record["loss"] == pytest.approx(record["reconstruction"] + LATENT * 1e3, rel=1e-6)
    assert record["kl"] < 1e3 and run.config.train.free_bits == 1e3


def test_free_bits_is_a_spec_key_recorded_in_config():
    cfg = Config.from_dict({"train": {"free_bits": 0.25}})
    assert cfg.train.free_bits == 0.25 and "free_bits = 0.25" in cfg.to_toml_string()
