"""Data parallelism over JAX devices (NumPyro backend, ``train.num_devices``).

The equivalence runs in a subprocess: JAX reads XLA_FLAGS (how many CPU devices it shows)
once, at import, and this test process has imported it already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # imported here first: the CLI then never changes XLA_FLAGS in this process
pytest.importorskip("numpyro")

from click.testing import CliRunner  # noqa: E402

from conftest import FAST, embedded_digits  # noqa: E402
from ppvae.cli import cli  # noqa: E402
from ppvae.cli.fit import ask_for_host_devices  # noqa: E402
from ppvae.errors import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Trains the same tiny VAE on 1 and on 2 CPU devices (global batch 48 = 2 x 24, 5 steps, no
# rest batch) and prints what the test compares. XLA_FLAGS is set by the CLI's own helper
# before JAX is imported, as `ppvae fit --num-devices 2` does.
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ppvae.cli.fit import ask_for_host_devices
    assert ask_for_host_devices(2)
    import jax
    import numpy as np
    from ppvae.api import resolve_config, build_config
    from ppvae.backends.numpyro.trainer import Trainer
    from ppvae.data import load_dataset

    data, tmp = sys.argv[1], Path(sys.argv[2])
    out = {"cpu_devices": len(jax.devices("cpu"))}
    params = {}
    for n in (1, 2):
        cfg = resolve_config(build_config(overrides={
            "data.source": data, "train.backend": "numpyro", "train.device": "cpu", "train.epochs": 1,
            "train.batch_size": 48, "train.seed": 3, "train.lr": 3e-3, "train.num_devices": n,
            "train.elbo": "trace", "model.latent_dim": 3,
            "model.encoder_options.hidden": [16], "model.decoder_options.hidden": [16]}))
        trainer = Trainer(cfg, load_dataset(cfg.data, "bernoulli", "unit_interval"), tmp / str(n), progress=False)
        record = trainer.fit().records[0]
        leaves = jax.tree_util.tree_leaves(trainer.params)
        params[n] = [np.asarray(leaf) for leaf in leaves]
        out[n] = {
            "record": {k: record[k] for k in ("step", "loss", "reconstruction", "kl", "heldout_elbo")},
            "devices_per_param": sorted({len(leaf.sharding.device_set) for leaf in leaves}),
            "replicas_identical": all(np.array_equal(np.asarray(s.data), np.asarray(leaf.addressable_shards[0].data))
                                      for leaf in leaves for s in leaf.addressable_shards),
            "all_reduces": trainer._programs["epoch"].as_text().count("all-reduce("),
        }
    out["max_param_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(params[1], params[2]))
    print(json.dumps(out))
""")


@pytest.mark.slow  # a fresh JAX process compiling two epochs: ~15-30 s on 2 busy cores
def test_two_devices_with_half_batches_reproduce_one_device(tmp_path):
    data = tmp_path / "digits.npz"
    np.savez(data, x=embedded_digits(300))  # 240 training rows: 5 steps of 48
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cpu_devices"] == 2  # the CLI helper's flag reached XLA
    one, two = out["1"], out["2"]
    assert one["devices_per_param"] == [1] and two["devices_per_param"] == [2]  # replicated on both devices
    assert two["replicas_identical"]  # every device holds bit-identical params after training
    assert one["all_reduces"] == 0 < two["all_reduces"]  # the gradient is summed across the devices
    assert one["record"]["step"] == two["record"]["step"] == 5
    # Same keys, same draws: the runs differ only in how float32 partial sums are grouped
    # (two halves of 24 rows all-reduced vs one sum of 48), a few ulp (6e-8 each) per loss;
    # 1e-5 relative leaves room for 5 Adam steps but not for a different draw (percents).
    for key in ("loss", "reconstruction", "kl", "heldout_elbo"):
        assert two["record"][key] == pytest.approx(one["record"][key], rel=1e-5), key
    # A weight moves by at most ~lr = 3e-3 per Adam step; reassociation changes an update by a
    # tiny fraction of that (measured ~6e-8), while any divergence would show at the 1e-3 scale.
    assert out["max_param_diff"] < 1e-5


def _config(**train):
    from ppvae.api import resolve_config, build_config

    return resolve_config(
        build_config(
            overrides={
                **FAST,
                "train.backend": "numpyro",
                "model.latent_dim": 2,
                **{f"train.{k}": v for k, v in train.items()},
            }
        )
    )


def test_more_devices_than_jax_sees_is_a_one_line_error_naming_the_fix(tmp_path, digits_npy):
    n = len(jax.devices("cpu")) + 1
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            "--backend",
            "numpyro",
            "--device",
            "cpu",
            "--num-devices",
            str(n),
            "--batch-size",
            str(8 * n),
            "--data",
            str(digits_npy),
            "--out",
            str(tmp_path / "run"),
            "-q",
        ],
    )
    assert result.exit_code != 0
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"train.num_devices = {n}" in message and "--xla_force_host_platform_device_count" in message


def test_the_global_batch_must_split_evenly_over_the_devices(tmp_path):
    from ppvae.backends.numpyro.sharding import data_parallel

    with pytest.raises(UsageError, match=r"batch_size = 100 does not split over train.num_devices = 3.*99 or 102"):
        data_parallel(3, "cpu", 100)
    assert data_parallel(1, "cpu", 100) is None  # one device: no mesh, the single-device program


def test_num_devices_is_a_numpyro_setting_and_not_part_of_the_fingerprint():
    with pytest.raises(UsageError, match='needs train.backend = "numpyro".*--num-processes'):
        _config(backend="pyro", num_devices=2)
    with pytest.raises(UsageError, match="num_devices must be a positive integer"):
        _config(num_devices=0)
    assert _config(num_devices=2).fingerprint() == _config(num_devices=1).fingerprint()


def test_the_cli_asks_xla_for_cpu_devices_only_before_jax_starts():
    env = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    assert ask_for_host_devices(4, env, modules={})
    assert env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"
    assert not ask_for_host_devices(2, env, modules={})  # already set: the user's count wins
    assert not ask_for_host_devices(2, {}, modules={"jax": None})  # too late: JAX has read XLA_FLAGS
    assert not ask_for_host_devices(1, {}, modules={})
