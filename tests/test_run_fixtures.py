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
    for key in ("heldout_elbo", "heldout_log_px", "heldout_log_px_stderr", "kl", "reconstruction",
                "bits_per_dim"):
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
    assert got["linear_probe_accuracy"] == pytest.approx(want["linear_probe_accuracy"],
                                                         abs=2.5 / want["num_points"])


def test_fixtures_cover_both_backends():
    backends = {json.loads((FIXTURES / r / "summary.json").read_text()).get("backend") or r.split("-")[0]
                for r in RUNS}
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
    res = CliRunner().invoke(cli, ["evaluate", str(path), "-k", str(EXPECTED["num_samples"]),
                                    "--seed", str(EXPECTED["seed"]), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    _same_figures(json.loads(res.output), EXPECTED["runs"][name])
    # Evaluating reads a run folder; it writes nothing into it.
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
