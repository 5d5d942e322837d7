"""The command line's shape: shared options declared once, one error boundary, no argv reflection."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from ppvae.cli import app, cli
from ppvae.cli.fit import fit, worker_arguments
from ppvae.spec.config import parse_override

CLI = Path(__file__).resolve().parents[1] / "ppvae" / "cli"
SHARED = {
    "--device",
    "--force",
    "--out",
    "--data",
    "--json",
    "--quiet",
    "--seed",
    "--set",
    "--label",
    "--num-samples",
    "--plugin",
}


def _modules():
    for path in sorted(CLI.glob("*.py")):
        yield path, ast.parse(path.read_text())


def test_each_shared_option_is_declared_once_in_options_py():
    found = {}
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
                names = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
                for name in names & SHARED:
                    found.setdefault(name, []).append(path.name)
    assert set(found) == SHARED
    assert {name: files for name, files in found.items() if files != ["options.py"]} == {}


def test_one_error_boundary_and_one_refusal_to_overwrite():
    catching, refusals = [], []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "PPVAEError":
                catching.append(path.name)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "already exists" in node.value:
                refusals.append(path.name)
    assert catching == ["app.py"]
    assert refusals == ["outputs.py"]


def test_no_command_reads_its_own_parameters_back():
    # The workers of --num-processes get arguments built from the parsed values, not argv
    # rebuilt by walking the command's parameters.
    for path, tree in _modules():
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {"params", "get_current_context"} & attrs, path.name


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.mark.parametrize("path", [p for p, c in _commands(cli) if any("run" == o.name for o in c.params)], ids=" ".join)
def test_a_bad_device_is_one_line_and_exit_2_on_every_command_on_a_run(path):
    # (fit and compare take --device as the spec's train.device, checked with the spec.)
    res = CliRunner().invoke(cli, [*path, "--device", "tpu9", "somewhere"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines == ["Error: --device 'tpu9' is not valid; use auto, cpu, cuda or cuda:N"], res.output


def test_worker_arguments_give_the_workers_the_checked_config(tmp_path):
    from ppvae import api

    settings = {
        "model.latent_dim": 3,
        "model.encoder_options": {"hidden": [16, 8]},
        "train.lr": 3e-4,
        "data.source": "my digits.npy",
        "train.beta_schedule": "linear",
        "train.device": "cpu",
    }
    plugin = tmp_path / "p.py"
    args = worker_arguments(None, None, tmp_path / "run", settings, [plugin], force=True, quiet=True)
    ctx = fit.make_context("fit", list(args))
    assert ctx.params["out"] == tmp_path / "run" and ctx.params["force"] and ctx.params["quiet"]
    assert ctx.params["plugin_files"] == (plugin,)
    parsed = dict(parse_override(s) for s in ctx.params["settings"])
    assert api.build_config(None, parsed).to_dict() == api.build_config(None, settings).to_dict()
    resumed = worker_arguments(
        None, tmp_path / "run", tmp_path / "run", {"train.epochs": 4}, [], force=False, quiet=False
    )
    assert resumed == ["--resume", str(tmp_path / "run"), "--set", "train.epochs=4"]


@pytest.mark.parametrize(
    "value",
    [[512, 256], ["a[ b", "c, ]"], 'two\nlines "quoted" = x', 1e-300, True, "plain", {"inner": {"deep": [1.5]}}],
)
def test_format_overrides_round_trips_through_parse_override(value):
    from ppvae.spec.config import format_overrides

    texts = format_overrides("k", value)
    assert all("\n" not in t for t in texts)  # each one argv word
    parsed = dict(parse_override(t) for t in texts)
    expected = {"k.inner.deep": [1.5]} if isinstance(value, dict) else {"k": value}
    assert parsed == expected


@pytest.mark.parametrize(
    "failure",
    [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")],
    ids=["numpy", "torch"],
)
def test_running_out_of_memory_is_one_line_and_leaves_no_empty_run_folder(tmp_path, monkeypatch, failure):
    from ppvae.backends.pyro import trainer

    def too_large(*args, **kwargs):
        raise failure

    monkeypatch.setattr(trainer.Trainer, "__init__", too_large)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["fit", "--epochs", "1", "--out", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"Error: {app.OUT_OF_MEMORY}"]
    assert not out.exists()


def test_other_runtime_errors_still_surface_as_bugs(tmp_path, monkeypatch):
    from ppvae.backends.pyro import trainer

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(trainer.Trainer, "__init__", bug)
    result = CliRunner().invoke(cli, ["fit", "--epochs", "1", "--out", str(tmp_path / "run"), "-q"])
    assert isinstance(result.exception, RuntimeError) and "shapes" in str(result.exception)
