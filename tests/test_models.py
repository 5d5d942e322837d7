"""The ready-made specs in models/, plug-in files, and ``ppvae models``.

Every spec trains one epoch on both backends on tiny data (its networks shrunk, its
structure kept). Plug-ins load from the command line and from a spec (relative to the
spec), are recorded in the run's config.toml and load again in a fresh process; every
plug-in mistake is one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from ppvae.spec import registry
from ppvae.cli import cli
from ppvae.spec.config import Config
from ppvae.errors import UsageError

MODELS = Path(__file__).resolve().parents[1] / "models"
SPECS = sorted(MODELS.glob("*.toml"))
BACKENDS = ("pyro", "numpyro")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *words):
    """A user error: one ``Error:`` line on stderr holding every word, exit code != 0, no traceback."""
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]}"
    return lines[0]


def write_plugin(folder: Path, name: str, filename: str | None = None) -> Path:
    """A plug-in file registering a portable prior called ``name`` (a learned-scale Normal)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (filename or f"{name}.py")
    path.write_text(
        textwrap.dedent(f'''
        import numpy as np
        import ppvae


        @ppvae.register("prior", "{name}")
        class Prior(ppvae.Portable):
            """Normal(0, s) with s learned (a test plug-in)."""

            def __init__(self, latent_dim, scale=1.0):
                self.param("log_scale", np.full(latent_dim, np.log(scale)))
                self.constant("loc", np.zeros(latent_dim))

            def distribution(self, dist, ops, p):
                return dist.Normal(p["loc"], ops.exp(p["log_scale"])).to_event(1)
    ''')
    )
    return path


@pytest.fixture(scope="module")
def tiny_npz(digits_npy, tmp_path_factory) -> Path:
    """96 labelled digits (72 train / 24 held out): enough for one epoch of every spec."""
    with np.load(digits_npy) as f:
        x, y = f["x"][:96], f["y"][:96]
    path = tmp_path_factory.mktemp("tiny") / "digits96.npz"
    np.savez(path, x=x, y=y)
    return path


def shrink(cfg: Config, source: Path) -> dict:
    """Overrides that keep a spec's structure (components, depth, estimator) but make it tiny."""
    out = {
        "data.source": str(source),
        "data.heldout_fraction": 0.25,
        "train.epochs": 1,
        "train.batch_size": 36,
        "train.eval_num_samples": 4,
        "train.device": "cpu",
        "model.latent_dim": min(cfg.model.latent_dim, 4),
    }
    for kind in ("encoder", "decoder"):
        name, options = getattr(cfg.model, kind), cfg.model.options(kind)
        if name in ("mlp", "conv"):
            hidden = options.get("hidden", [400] if name == "mlp" else [])
            out[f"model.{kind}_options.hidden"] = [8] * len(hidden)
        if name == "conv":
            out[f"model.{kind}_options.channels"] = [4, 8] if kind == "encoder" else [8, 4]
    if "num_components" in cfg.model.prior_options or cfg.model.prior == "vamp":
        out["model.prior_options.num_components"] = 3
    if cfg.model.latent_layers:  # as many layers, each tiny
        out["model.latent_layers"] = [2] * len(cfg.model.latent_layers)
        out["model.latent_layer_options.hidden"] = [8] * len(cfg.model.latent_layer_options.get("hidden", [100, 100]))
    return out


# -- every spec in models/ -----------------------------------------------------------------------


def test_every_spec_starts_with_what_it_is_and_how_to_run_it():
    assert len(SPECS) >= 12
    for spec in SPECS:
        lines = spec.read_text().splitlines()
        assert lines[0].startswith("# ") and len(lines[0]) > 20, f"{spec.name}: first line must describe it"
        header = "\n".join(line for line in lines if line.startswith("#"))
        assert f"ppvae fit models/{spec.name}" in header, f"{spec.name}: say how to run it"
        assert "EXPECT_" not in header and "MEASURE_" not in header, f"{spec.name}: fill in what to expect"
        cfg = Config.from_toml(spec)  # valid keys and values (component names are checked when trained)
        assert cfg.data.source == "embedded", f"{spec.name}: runs anywhere, no download"
        assert all(Path(p).is_file() for p in cfg.plugins), f"{spec.name}: plug-in files exist"


# NumPyro compiles every spec's program afresh (several seconds each on 2 cores): slow.
@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_trains_one_epoch(spec, backend, tiny_npz, tmp_path):
    cfg = ppvae.build_config(spec)
    run = ppvae.fit(spec, out=tmp_path / "run", backend=backend, overrides=shrink(cfg, tiny_npz), pictures=False)
    record = run.metrics()[-1]
    assert record["epoch"] == 1
    assert all(math.isfinite(record[k]) for k in ("loss", "heldout_elbo"))
    # The spec's own structure survived the shrinking.
    saved = run.config
    assert (saved.model.prior, saved.model.likelihood, saved.model.encoder, saved.model.decoder) == (
        cfg.model.prior,
        cfg.model.likelihood,
        cfg.model.encoder,
        cfg.model.decoder,
    )
    assert (saved.train.elbo, saved.train.num_particles, saved.train.beta, saved.train.beta_schedule) == (
        cfg.train.elbo,
        cfg.train.num_particles,
        cfg.train.beta,
        cfg.train.beta_schedule,
    )
    assert saved.model.conditional == cfg.model.conditional and saved.data.standardize == cfg.data.standardize
    assert len(saved.model.latent_layers) == len(cfg.model.latent_layers)
    assert saved.plugins == cfg.plugins


def test_teaching_specs_have_the_stated_architectures():
    def table(name):
        return Config.from_toml(MODELS / f"{name}.toml").model

    conv = table("conv-2d")
    assert (conv.encoder, conv.decoder, conv.latent_dim, conv.likelihood) == ("conv", "conv", 2, "bernoulli")
    assert conv.encoder_options["channels"] == [32, 64] and conv.encoder_options["hidden"] == [64]
    assert conv.decoder_options["channels"] == [64, 32] and conv.decoder_options["hidden"] == []
    dense = table("dense-200")
    assert dense.latent_dim == 200 and dense.encoder_options["hidden"] == dense.decoder_options["hidden"] == []
    mlp = table("mlp-400-200")
    assert mlp.encoder_options["hidden"] == [400, 200] and mlp.decoder_options["hidden"] == [200, 400]
    mse = Config.from_toml(MODELS / "mlp-mse.toml")
    assert mse.model.likelihood == "normal" and mse.data.standardize
    assert mse.model.encoder_options == mlp.encoder_options and mse.model.decoder_options == mlp.decoder_options


def test_conv_2d_spec_builds_the_described_torch_network():
    from ppvae.backends.pyro import nets

    opts = Config.from_toml(MODELS / "conv-2d.toml").model
    enc = nets.ConvEncoder((28, 28), 2, **opts.encoder_options)
    dec = nets.ConvDecoder(2, (28, 28), **opts.decoder_options)
    convs = [m for m in enc.conv if hasattr(m, "stride")]
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs] == [(32, (3, 3), (2, 2)), (64, (3, 3), (2, 2))]
    assert enc.dense[0][0].out_features == 64
    # Dense to a 7x7x32 map, transposed convolutions of 64 then 32 filters, a 3x3 conv to the logits.
    assert dec.start == (32, 7, 7) and dec.dense[0].out_features == 7 * 7 * 32
    deconvs = [m for m in dec.deconv if hasattr(m, "stride")]
    assert [(type(m).__name__, m.out_channels, m.stride) for m in deconvs] == [
        ("ConvTranspose2d", 64, (2, 2)),
        ("ConvTranspose2d", 32, (2, 2)),
        ("Conv2d", 1, (1, 1)),
    ]
    import torch

    assert dec(torch.zeros(5, 2)).shape == (5, 28, 28)


# -- plug-ins ------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter imports torch and pyro again
def test_plugin_from_the_command_line_is_recorded_and_reloads_in_a_fresh_process(tmp_path, tiny_npz):
    plugin = write_plugin(tmp_path / "plug", "cli_plugin_prior")
    run = tmp_path / "run"
    result = invoke(
        "fit",
        "--plugin",
        plugin,
        "--prior",
        "cli_plugin_prior",
        "--data",
        tiny_npz,
        "--out",
        run,
        "--epochs",
        "1",
        "--latent-dim",
        "2",
        "-q",
        "--set",
        "train.eval_num_samples=4",
        "--set",
        "model.encoder_options.hidden=[8]",
        "--set",
        "model.decoder_options.hidden=[8]",
    )
    assert result.exit_code == 0, result.output
    saved = Config.from_toml(run / "config.toml")
    assert saved.plugins == (str(plugin.resolve()),)
    assert saved.model.prior == "cli_plugin_prior"
    # A fresh interpreter has never seen the prior: opening the run and refitting its
    # config.toml must load the recorded plug-in by themselves.
    code = textwrap.dedent(f"""
        import json, ppvae
        from ppvae.spec import registry
        before = "cli_plugin_prior" in registry.portable("prior")
        ev = ppvae.load({str(run)!r}).evaluate(num_samples=3)
        again = ppvae.fit({str(run / "config.toml")!r}, out={str(tmp_path / "again")!r}, pictures=False)
        print(json.dumps({{"before": before, "elbo": ev["heldout_elbo"], "prior": again.config.model.prior}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] is False and math.isfinite(out["elbo"]) and out["prior"] == "cli_plugin_prior"


def test_plugin_named_in_a_spec_is_relative_to_the_spec(tmp_path, tiny_npz, monkeypatch):
    plugin = write_plugin(tmp_path / "project" / "plugins", "spec_plugin_prior")
    spec = tmp_path / "project" / "specs" / "mine.toml"
    spec.parent.mkdir(parents=True)
    spec.write_text(
        'plugins = ["../plugins/spec_plugin_prior.py"]\n\n[model]\nprior = "spec_plugin_prior"\nlatent_dim = 2\n'
    )
    monkeypatch.chdir(tmp_path)  # not the spec's folder: the path must still resolve
    assert Config.from_toml(spec).plugins == (str(plugin.resolve()),)
    run = ppvae.fit(
        spec,
        out=tmp_path / "run",
        pictures=False,
        overrides={
            "data.source": str(tiny_npz),
            "train.epochs": 1,
            "train.eval_num_samples": 4,
            "model.encoder_options.hidden": [8],
            "model.decoder_options.hidden": [8],
        },
    )
    assert run.config.plugins == (str(plugin.resolve()),)
    assert "plugins = [" in (tmp_path / "run" / "config.toml").read_text()


def test_a_plugin_file_runs_once_and_reports_what_it_registered(tmp_path):
    from ppvae.spec.plugins import load_plugin, load_plugins, loaded_plugins

    plugin = write_plugin(tmp_path, "once_prior")
    assert load_plugin(plugin) == [("prior", "once_prior", "portable")]
    factory = registry.portable("prior")["once_prior"].factory
    assert load_plugins([plugin, str(plugin)]) == [str(plugin.resolve())]
    assert registry.portable("prior")["once_prior"].factory is factory  # not executed again
    assert str(plugin.resolve()) in loaded_plugins()
    # Two plug-ins with the same file name in different folders do not replace each other.
    other = write_plugin(tmp_path / "b", "once_prior_b", filename="once_prior.py")
    assert load_plugin(other) == [("prior", "once_prior_b", "portable")]


BAD_PLUGINS = {
    "missing": (None, ("does not exist", "nowhere.py")),
    "raises": (
        "import ppvae\n\nraise RuntimeError('the prior is broken')\n",
        ("failed to load", "bad.py", "line 3", "RuntimeError: the prior is broken"),
    ),
    "syntax": ("def broken(:\n    pass\n", ("failed to load", "bad.py", "line 1", "SyntaxError")),
    "import": ("import no_such_module_ppvae\n", ("failed to load", "ModuleNotFoundError", "no_such_module_ppvae")),
    "nothing": ("x = 1\n", ("registered no component", "bad.py", "ppvae.register")),
    "bad-kind": (
        "import ppvae\n\n@ppvae.register('posterior', 'p')\nclass P:\n    pass\n",
        ("bad.py", "line 3", "unknown component kind 'posterior'", "prior"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_every_plugin_error_is_one_line(tmp_path, case):
    content, words = BAD_PLUGINS[case]
    path = tmp_path / ("nowhere.py" if content is None else "bad.py")
    if content is not None:
        path.write_text(content)
    assert_one_line_error(invoke("fit", "--plugin", path, "--out", tmp_path / "run"), *words)
    assert not (tmp_path / "run").exists()
    assert_one_line_error(invoke("models", "--plugin", path), *words)


def test_plugin_errors_from_a_spec_and_a_run_are_one_line(tmp_path):
    (tmp_path / "not_python.txt").write_text("x")
    assert_one_line_error(invoke("models", "--plugin", tmp_path / "not_python.txt"), "not a Python file")
    spec = tmp_path / "spec.toml"
    spec.write_text('plugins = ["gone.py"]\n')
    assert_one_line_error(invoke("fit", spec, "--out", tmp_path / "run"), str(tmp_path / "gone.py"), "does not exist")
    spec.write_text('plugins = "gone.py"\n')
    assert_one_line_error(invoke("fit", spec, "--out", tmp_path / "run"), "plugins must be a list")


def test_a_run_whose_plugin_moved_says_which_file_and_where_it_is_named(tiny_run, tmp_path):
    cfg = tiny_run / "config.toml"
    cfg.write_text(f'plugins = ["{tmp_path / "moved.py"}"]\n' + cfg.read_text())
    line = assert_one_line_error(invoke("evaluate", tiny_run, "-k", "2"), "moved.py", "config.toml", "does not exist")
    assert str(cfg) in line


def test_plugin_option_on_every_model_command():
    # Every command builds or opens a model (and so may need a plug-in's components),
    # including commands added later (score, plot ...); list exceptions here with a reason.
    without_models: set[str] = set()
    core = {"fit", "evaluate", "sample", "reconstruct", "encode", "decode", "compare", "diagnose", "models"}
    assert core <= set(cli.commands)
    missing = []
    for name, command in cli.commands.items():
        if name in without_models:
            continue
        commands = list(command.commands.values()) if hasattr(command, "commands") else [command]
        missing += [
            f"{name} {c.name}".strip() for c in commands if "--plugin" not in {o for p in c.params for o in p.opts}
        ]
    assert not missing, f"commands without --plugin (decorate them with ppvae.cli.with_plugins): {missing}"


# -- missing components ----------------------------------------------------------------------------


def test_a_component_missing_on_one_backend_names_it_the_backend_and_the_fix(tmp_path):
    import torch

    @ppvae.register("prior", "pyro_only_prior", backend="pyro")
    class PyroOnly(torch.nn.Module):
        """A prior written for the pyro backend only."""

    with pytest.raises(UsageError) as err:
        registry.get("prior", "pyro_only_prior", "numpyro")
    message = str(err.value)
    for words in (
        "prior 'pyro_only_prior'",
        "backend numpyro",
        "registered for backend pyro only",
        "valid prior names: ",
        "normal",
        "ppvae.Portable",
    ):
        assert words in message, message
    assert "\n" not in message
    line = assert_one_line_error(
        invoke("fit", "--prior", "no_such_prior", "--out", tmp_path / "r"),
        "unknown prior 'no_such_prior'",
        "backend pyro",
        "not registered",
        "--plugin FILE",
        "ppvae.Portable",
    )
    assert "valid prior names: " in line


# -- ppvae models ----------------------------------------------------------------------------------


def test_models_lists_every_spec_and_every_component():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for spec in SPECS:
        assert spec.stem in result.stdout
    assert "[plug-in: plugins/student_t_prior.py]" in result.stdout
    for kind in registry.KINDS:
        for name in set(registry.names(kind, "pyro")) | set(registry.names(kind, "numpyro")):
            assert f"    {name} " in result.stdout, f"{kind} {name} missing"


def test_models_json_with_a_plugin_marks_portable_components_as_both():
    plugin = MODELS / "plugins" / "student_t_prior.py"
    result = invoke("models", "--json", "--plugin", plugin)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    specs = {s["name"]: s for s in data["specs"]}
    assert set(specs) == {p.stem for p in SPECS}
    assert specs["mlp-400"]["description"].startswith("The benchmark protocol")
    assert specs["student-t-prior"]["plugins"] == ["plugins/student_t_prior.py"]
    priors = {c["name"]: c for c in data["components"]["prior"]}
    assert priors["heavy_tailed"]["portable"] and set(priors["heavy_tailed"]["backends"]) == set(BACKENDS)
    # The built-ins of fixed form are one definition too; the VampPrior is written per backend.
    assert priors["normal"]["portable"] and set(priors["normal"]["backends"]) == set(BACKENDS)
    assert not priors["vamp"]["portable"] and set(priors["vamp"]["backends"]) == set(BACKENDS)
    assert str(plugin.resolve()) in data["plugins"]
    text = invoke("models", "--plugin", plugin).stdout
    assert any(line.split()[:2] == ["heavy_tailed", "both"] for line in text.splitlines())


def test_models_dir_points_elsewhere(tmp_path):
    (tmp_path / "a.toml").write_text("# My own spec: tiny.\n\n[model]\nlatent_dim = 2\n")
    result = invoke("models", "--dir", tmp_path)
    assert result.exit_code == 0 and "My own spec: tiny." in result.stdout
    assert "mlp-400" not in result.stdout
    assert_one_line_error(invoke("models", "--dir", tmp_path / "nope"), "not a folder")
