"""Run folders written by an earlier ppvae still load and evaluate to their recorded figures.

The folders under ``tests/fixtures/runs`` were written before the package was reorganised
(see the README there). Evaluation on the CPU is deterministic at a fixed seed, so the only
differences a faithful reorganisation may bring are float32 rounding from reassociated sums:
a relative 1e-5 is about 100 times the float32 unit roundoff summed over a 784-pixel
event, and far below any change a wrong parameter or a wrong estimator would make (the
two epochs of training moved these figures by tens of nats).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
EXPECTED = json.loads((FIXTURES / "expected_evaluate.json").read_text())
RUNS = sorted(EXPECTED["runs"])
RTOL = 1e-5


def _copy(name: str, tmp_path: Path) -> Path:
    # Evaluate a copy: a command that wrote into the fixture would change what later runs test.
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def _same_figures(got: dict, want: dict) -> None:
    for key in ("heldout_elbo", "heldout_log_px", "heldout_log_px_stderr", "kl", "reconstruction", "bits_per_dim"):
        assert got[key] == pytest.approx(want[key], rel=RTOL), key
    assert got["num_points"] == want["num_points"]
    assert got["num_samples"] == want["num_samples"]
    assert got["active_units"] == want["active_units"]
    for g, w in zip(got["kl_per_dim"], want["kl_per_dim"], strict=True):
        if w is None:
            assert g is None or not math.isfinite(g)
        else:
            assert g == pytest.approx(w, rel=RTOL, abs=1e-7)
    # The linear probe is fitted on latent means; rounding can move at most a point or two
    # across its decision boundary, each worth 1 / num_points of accuracy.
    assert got["linear_probe_accuracy"] == pytest.approx(want["linear_probe_accuracy"], abs=2.5 / want["num_points"])


def test_fixtures_cover_both_backends():
    backends = {json.loads((FIXTURES / r / "summary.json").read_text()).get("backend") or r.split("-")[0] for r in RUNS}
    assert {"pyro", "numpyro"} <= backends
    for r in RUNS:
        assert (FIXTURES / r / "checkpoint.safetensors").is_file()
        assert (FIXTURES / r / "config.toml").is_file()


@pytest.mark.parametrize("name", RUNS)
def test_old_run_evaluates_to_recorded_figures_api(name, tmp_path):
    import ppvae

    run = ppvae.load(_copy(name, tmp_path), device="cpu")
    ev = run.evaluate(num_samples=EXPECTED["num_samples"], seed=EXPECTED["seed"])
    _same_figures(ev, EXPECTED["runs"][name])


@pytest.mark.parametrize("name", RUNS)
def test_old_run_evaluates_to_recorded_figures_cli(name, tmp_path):
    from ppvae.cli import cli

    path = _copy(name, tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    res = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(path),
            "-k",
            str(EXPECTED["num_samples"]),
            "--seed",
            str(EXPECTED["seed"]),
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    _same_figures(json.loads(res.output), EXPECTED["runs"][name])
    # Evaluating reads a run folder; it writes nothing into it.
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


def test_numpyro_checkpoint_of_a_portable_in_the_old_dict_layout_loads_by_name(tmp_path):
    """Before issue 13 a portable component's NumPyro arrays sat in a dict: paths
    ``.arrays['name']`` and leaves in sorted-name order. Such a checkpoint (params and Adam
    moments) loads into today's fields by name, even where the two orders differ and the
    shapes are equal, so an index-by-index load would swap the arrays silently."""
    jax = pytest.importorskip("jax")
    import numpy as np
    import optax

    import ppvae
    from ppvae.backends.numpyro import checkpoint
    from ppvae.backends.numpyro.model import build_vae, initial_params
    from ppvae.inference.checkpoints import save_arrays
    from ppvae.spec.config import ModelSpec

    @ppvae.register("prior", "test_two_same_shaped_arrays")
    class TwoArrays(ppvae.Portable):
        """Declares 'scale_raw' before 'loc': sorted order is the reverse."""

        def __init__(self, latent_dim):
            self.param("scale_raw", np.zeros(latent_dim))
            self.param("loc", np.zeros(latent_dim))

        def distribution(self, dist, ops, p):
            return dist.Normal(p["loc"], ops.exp(p["scale_raw"])).to_event(1)

    vae = build_vae(
        ModelSpec(
            latent_dim=3,
            prior="test_two_same_shaped_arrays",
            likelihood="bernoulli",
            encoder_options={"hidden": [4]},
            decoder_options={"hidden": [4]},
        ),
        (5,),
        jax.random.PRNGKey(0),
    )
    template = initial_params(vae)
    flat = jax.tree_util.tree_flatten_with_path(template)[0]
    paths = [jax.tree_util.keystr(p) for p, _ in flat]
    # Distinct values per leaf: leaf i is filled with i, its Adam moments with 100 + i and 200 + i.
    values = [np.full(np.shape(v), float(i), np.float32) for i, (_, v) in enumerate(flat)]
    old_paths = [
        p.replace("].loc", "].arrays['loc']").replace("].scale_raw", "].arrays['scale_raw']")
        if "prior$params" in p
        else p
        for p in paths
    ]
    # The old layout: the prior's leaves in sorted-name order (loc before scale_raw).
    prior = [i for i, p in enumerate(paths) if "prior$params" in p]
    old_order = list(range(len(paths)))
    old_order[prior[0] : prior[-1] + 1] = sorted(prior, key=lambda i: old_paths[i])
    assert old_order != list(range(len(paths)))
    opt_template = optax.adam(1e-3).init(template)
    opt_leaves = jax.tree_util.tree_leaves(opt_template)
    n = len(paths)
    arrays = {f"params.{j}": values[i] for j, i in enumerate(old_order)}
    saved_opt = (
        [np.asarray(opt_leaves[0])] + [values[i] + 100 for i in old_order] + [values[i] + 200 for i in old_order]
    )
    assert len(saved_opt) == len(opt_leaves) == 2 * n + 1
    arrays.update({f"optim.{j}": v for j, v in enumerate(saved_opt)})
    arrays["rng.key"] = np.asarray(jax.random.PRNGKey(1))
    path = tmp_path / checkpoint.FILENAME
    save_arrays(path, arrays, {"param_paths": [old_paths[i] for i in old_order]})

    params, opt_state, _, _ = checkpoint.load(path, template, opt_template)
    for (p, leaf), want in zip(jax.tree_util.tree_flatten_with_path(params)[0], values):
        np.testing.assert_array_equal(np.asarray(leaf), want, err_msg=jax.tree_util.keystr(p))
    adam = opt_state[0]
    for moment, offset in ((adam.mu, 100), (adam.nu, 200)):
        for leaf, want in zip(jax.tree_util.tree_leaves(moment), values):
            np.testing.assert_array_equal(np.asarray(leaf), want + offset)
