"""The trace-free sites of ppvae's own VAE give the trace path's values and gradients exactly.

``objectives.terms`` computes the sites of a plain :class:`VAE` directly (see
``ppvae.backends.pyro.direct``) and falls back to Pyro's trace + replay for anything else.
Each case runs the same seeded step both ways and compares the loss terms and every
parameter's gradient.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from ppvae.backends.pyro import build_vae, log_weights, terms
from ppvae.backends.pyro import direct, objectives
from ppvae.backends.pyro.model import VAE
from ppvae.spec.config import ModelSpec

N_DATA = 500  # the plate's dataset size: the data scale is N / B


def make_vae(latent_dim=3, **spec):
    torch.manual_seed(1)
    spec = ModelSpec(latent_dim=latent_dim, encoder_options={"hidden": [16]}, decoder_options={"hidden": [16]}, **spec)
    return build_vae(spec, (6, 5), dataset_size=N_DATA, register_params=False)


def batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 6, 5, generator=g) < 0.4).float()


def step(vae, x, use_direct: bool, monkeypatch, **kwargs):
    """Terms and gradients of one seeded step, through the direct sites or the traces."""
    calls = []

    def spy(*args):
        sites = direct.direct_traces(*args) if use_direct else None
        calls.append(sites is not None)
        return sites

    monkeypatch.setattr(objectives, "direct_traces", spy)
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    t = terms(vae.model, vae.guide, x, **kwargs)
    t.loss.backward()
    grads = {k: p.grad.clone() for k, p in vae.named_parameters() if p.grad is not None}
    assert calls == [use_direct]  # the direct sites were (or were not) used
    return (t.loss, t.reconstruction, t.kl, t.beta, t.data_scale, t.batch), grads


def assert_same(a, b):
    (va, ga), (vb, gb) = a, b
    for x, y in zip(va, vb):
        assert torch.equal(torch.as_tensor(x), torch.as_tensor(y)), (x, y)
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        # Backward through the plates' expand sums the same values; allow for a reordered sum.
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-6, atol=1e-7, msg=k)


@pytest.mark.parametrize("estimator,k", [("meanfield", 1), ("trace", 1), ("meanfield", 3), ("iwae", 4), ("dreg", 4)])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_direct_sites_match_the_traces(estimator, k, beta, monkeypatch):
    vae, x = make_vae(), batch()
    kw = dict(beta=beta, estimator=estimator, num_particles=k)
    assert_same(step(vae, x, True, monkeypatch, **kw), step(vae, x, False, monkeypatch, **kw))


@pytest.mark.parametrize(
    "spec",
    [
        {"prior": "mog"},
        {"prior": "vamp"},
        {"guide": "lowrank"},
        {"likelihood": "normal"},
        {"conditional": True, "num_classes": 3},
    ],
)
def test_direct_sites_match_the_traces_for_other_components(spec, monkeypatch):
    vae, x = make_vae(**spec), batch()
    kw = dict(beta=0.7, estimator="dreg" if spec.get("guide") else "meanfield", num_particles=2)
    if spec.get("conditional"):
        kw["y"] = torch.arange(x.shape[0]) % 3
    assert_same(step(vae, x, True, monkeypatch, **kw), step(vae, x, False, monkeypatch, **kw))


def test_log_weights_match_the_traces(monkeypatch):
    vae, x = make_vae(), batch()
    vae.dataset_size = None
    out = []
    for use in (True, False):
        monkeypatch.setattr(objectives, "direct_traces", direct.direct_traces if use else lambda *a: None)
        torch.manual_seed(2)
        out.append(log_weights(vae.model, vae.guide, x, beta=1.0, num_particles=5))
    assert torch.equal(*out)


class _Custom(VAE):
    pass


def test_anything_unusual_takes_the_trace_path():
    vae, x = make_vae(), batch()
    args, plain = (x,), {"beta": 1.0}
    assert direct.direct_traces(vae.model, vae.guide, args, plain, 1) is not None
    # A handler is active (SVI's param capture, condition, a user's trace): Pyro must see the sites.
    with poutine.trace():
        assert direct.direct_traces(vae.model, vae.guide, args, plain, 1) is None
    # A subclass, someone else's guide, params in the param store, unknown arguments, a tensor β.
    custom = _Custom(
        vae.prior,
        vae.likelihood,
        vae.encoder,
        vae.decoder,
        vae.event_shape,
        vae.latent_dim,
        dataset_size=N_DATA,
        register_params=False,
    )
    assert direct.direct_traces(custom.model, custom.guide, args, plain, 1) is None
    assert direct.direct_traces(vae.model, lambda *a, **k: None, args, plain, 1) is None
    assert direct.direct_traces(vae.model, vae.guide, args, {"beta": 1.0, "other": 1}, 1) is None
    assert direct.direct_traces(vae.model, vae.guide, args, {"beta": torch.tensor(1.0)}, 1) is None
    vae.register_params = True
    assert direct.direct_traces(vae.model, vae.guide, args, plain, 1) is None


def test_a_refused_beta_is_still_refused_by_pyro():
    vae, x = make_vae(), batch()
    with pytest.raises(ValueError, match="scale > 0"):
        terms(vae.model, vae.guide, x, beta=0.0)


def test_pyro_svi_still_traces_the_pair():
    vae, x = make_vae(), batch()
    vae.register_params = True
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), objectives.VAEObjective("iwae", 3))
    assert torch.isfinite(torch.tensor(svi.step(x)))
    assert any(name.startswith("ppvae_encoder") for name in pyro.get_param_store().keys())
