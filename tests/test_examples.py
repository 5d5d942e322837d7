"""Every example script runs in its tiny mode."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_prior_runs_on_both_backends(tmp_path):
    pytest.importorskip("numpyro")
    results = load("custom_prior").main(["--tiny", "--out", str(tmp_path)])
    assert set(results) == {"pyro", "numpyro"}
    assert all(math.isfinite(r["heldout_log_px"]) for r in results.values())
    assert (tmp_path / "numpyro" / "samples.png").is_file()
