"""The table of estimators is the one list of their names, and everything reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ppvae.spec.config import Config, TrainSpec
from ppvae.errors import UsageError
from ppvae.inference.estimators import ESTIMATORS, estimator, estimator_names, importance_weighted_names

PACKAGE = Path(__file__).resolve().parents[1] / "ppvae"


def test_table_entries():
    assert estimator_names() == ("meanfield", "trace", "iwae", "dreg")
    assert importance_weighted_names() == ("iwae", "dreg")
    assert estimator("meanfield").analytic_kl and not estimator("trace").analytic_kl
    assert estimator("dreg").gaussian_guide_only
    for e in ESTIMATORS.values():
        assert set(e.backends) <= {"pyro", "numpyro"} and e.bound and e.summary


def test_unknown_name_lists_the_table():
    with pytest.raises(UsageError, match="valid: meanfield, trace, iwae, dreg"):
        estimator("elbo2")
    with pytest.raises(UsageError, match="choose one of: meanfield, trace, iwae, dreg"):
        TrainSpec(elbo="elbo2")


def test_a_backend_the_table_does_not_name_is_refused_before_training(monkeypatch, tmp_path):
    import dataclasses

    from ppvae.cli import cli
    from ppvae.inference import estimators

    monkeypatch.setitem(estimators.ESTIMATORS, "trace", dataclasses.replace(ESTIMATORS["trace"], backends=("pyro",)))
    Config.from_dict({"train": {"backend": "pyro", "elbo": "trace"}})  # the backend it names: fine
    with pytest.raises(UsageError, match='implemented for backend pyro only, not train.backend = "numpyro"'):
        Config.from_dict({"train": {"backend": "numpyro", "elbo": "trace"}})
    res = CliRunner().invoke(cli, ["fit", "--backend", "numpyro", "--elbo", "trace", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "--backend pyro" in res.output and not (tmp_path / "r").exists()


def test_cli_choices_and_help_come_from_the_table():
    from ppvae.cli import cli

    fit = cli.commands["fit"]
    option = next(p for p in fit.params if p.name == "elbo")
    assert tuple(option.type.choices) == estimator_names()
    text = CliRunner().invoke(cli, ["fit", "--help"], terminal_width=200).output
    for e in ESTIMATORS.values():
        assert "".join(e.summary.split()) in "".join(text.split())  # wrapped lines may break anywhere


def test_no_other_list_of_estimator_names_in_the_package():
    # A tuple, list or set literal holding two or more estimator names is a second list
    # of them; the table (ppvae/inference/estimators.py) must stay the only one.
    names = set(estimator_names())
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "estimators.py" and path.parent.name == "inference":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                found = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names}
                if len(found) >= 2:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


@pytest.mark.parametrize("name", estimator_names())
def test_every_entry_is_implemented_by_every_backend_it_names(name):
    # Each backend's objective builds its terms for each entry on a tiny model: an entry
    # without an implementation fails here, not in a user's fit.
    x = (np.random.default_rng(0).random((8, 28, 28)) > 0.5).astype(np.float32)
    spec = (
        Config()
        .with_overrides(
            {"model.latent_dim": 2, "model.encoder_options.hidden": [8], "model.decoder_options.hidden": [8]}
        )
        .model
    )
    for backend in estimator(name).backends:
        if backend == "pyro":
            import torch

            from ppvae.backends import pyro as pb

            vae = pb.build_vae(spec, (28, 28), dataset_size=8)
            t = pb.terms(vae.model, vae.guide, torch.as_tensor(x), beta=1.0, estimator=name, num_particles=2)
            loss = float(t.loss.detach())
        else:
            import jax
            import jax.numpy as jnp
            from numpyro import handlers

            from ppvae.backends import numpyro as npb

            vae = npb.build_vae(spec, (28, 28), jax.random.PRNGKey(0), dataset_size=8)
            params = npb.initial_params(vae)
            t = npb.terms(
                handlers.substitute(vae.model, data=params),
                handlers.substitute(vae.guide, data=params),
                jax.random.PRNGKey(1),
                jnp.asarray(x),
                1.0,
                estimator=name,
                num_particles=2,
            )
            loss = float(t.loss)
        assert np.isfinite(loss), (name, backend)
