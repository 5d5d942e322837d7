"""Multi-process data-parallel training of the Pyro backend (torch.distributed, gloo on CPU)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ppvae

from conftest import FAST, embedded_digits

WORLD = 2
PER_RANK = 10  # batch per process; the single process takes WORLD * PER_RANK
N_POINTS = 79  # 63 train / 16 held out: the epoch's last global batch (3 points) splits 2 + 1
STEPS = 4  # one whole epoch: 20 + 20 + 20 + 3 points
LATENT = 2
SETTINGS = {
    **FAST,
    "model.encoder_options.hidden": [16],
    "model.decoder_options.hidden": [16],
    "model.latent_dim": LATENT,
    "data.binarize": "static",
    "train.log_every": 1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "points.npy"
    np.save(path, embedded_digits(N_POINTS))
    return path


def global_batches() -> list[int]:
    n_train = N_POINTS - round(0.2 * N_POINTS)
    g = WORLD * PER_RANK
    return [min(g, n_train - i * g) for i in range(STEPS)]


def align_noise(rank: int, world: int) -> None:
    """Every z draw of step k takes the rows of one global noise table that its points have.

    The single process draws rows [0, m) of step k's table for its m points; rank r of the
    job draws the rows of its contiguous block, so both see the same noise per point.
    """
    from torch.distributions import normal

    table = torch.randn(STEPS, WORLD * PER_RANK, LATENT, generator=torch.Generator().manual_seed(7))
    sizes, step = global_batches(), [0]

    def standard_normal(shape, dtype, device):
        k = step[0]
        base, extra = divmod(sizes[k], world)
        start, b = rank * base + min(rank, extra), base + (rank < extra)
        assert tuple(shape) == (b, LATENT), (shape, b)
        step[0] += 1
        return table[k, start : start + b].to(dtype=dtype, device=device)

    normal._standard_normal = standard_normal


def _train_rank(rank: int, port: int, data: str, out: str) -> None:
    """One process of the job (run by torch.multiprocessing).

    Trains STEPS steps with aligned noise (``rank{r}.npz``), then with each rank's own
    noise STEPS steps straight (``straight{r}.npz``) and 2 + (STEPS - 2) steps with a
    resume in between (``resumed{r}.npz``).
    """
    from torch.distributions import normal

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    out = Path(out)
    overrides = {**SETTINGS, "data.source": data, "train.batch_size": PER_RANK}
    own_noise = normal._standard_normal
    align_noise(rank, WORLD)
    run = ppvae.fit(out=out / "run", overrides=overrides, stop_after_steps=STEPS, pictures=False)
    np.savez(out / f"rank{rank}.npz", **run.trained.state_arrays())

    normal._standard_normal = own_noise
    for name, stops in (("straight", [STEPS]), ("resumed", [2, STEPS])):
        for i, stop in enumerate(stops):
            run = ppvae.fit(
                out=None if i else out / name,
                resume=out / name if i else None,
                overrides=None if i else overrides,
                stop_after_steps=stop,
                pictures=False,
            )
        np.savez(out / f"{name}{rank}.npz", **run.trained.state_arrays())


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_global_batch(points, tmp_path, monkeypatch):
    torch.multiprocessing.start_processes(
        _train_rank, args=(free_port(), str(points), str(tmp_path)), nprocs=WORLD, start_method="spawn"
    )
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(WORLD)]
    # DDP averages the gradients, so every rank takes the same Adam steps, bit for bit.
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    # Only rank 0 wrote the run folder (no metrics: the job stopped inside the first epoch).
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.safetensors",
        "config.toml",
        "data.json",
        "metrics.jsonl",
    ]

    # Restored after the test: align_noise replaces torch's standard-normal draw.
    monkeypatch.setattr(torch.distributions.normal, "_standard_normal", torch.distributions.normal._standard_normal)
    align_noise(0, 1)
    single = ppvae.fit(
        out=tmp_path / "single",
        overrides={**SETTINGS, "data.source": str(points), "train.batch_size": WORLD * PER_RANK},
        stop_after_steps=STEPS,
        pictures=False,
    ).trained.state_arrays()
    # Same points, same noise, same weights: only the order of float32 sums differs (DDP
    # averages the two halves' gradients); measured ~3e-8 after 4 steps, while a wrong
    # weight for the uneven last batch shows as ~5e-4.
    for name, value in single.items():
        np.testing.assert_allclose(ranks[0][name], value, rtol=1e-5, atol=1e-6, err_msg=name)

    # The checkpoint carries every rank's RNG state: stopped after 2 steps and resumed, the
    # job ends exactly where the uninterrupted one does (the ranks drew different noise).
    for r in range(WORLD):
        straight, resumed = np.load(tmp_path / f"straight{r}.npz"), np.load(tmp_path / f"resumed{r}.npz")
        for name in straight:
            np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


def rank_pid(parent: int, rank: int) -> int | None:
    """The pid of worker ``rank`` among the children of ``parent`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            if f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_killed_process_ends_the_job_in_one_line_and_the_run_resumes(points, tmp_path):
    run = tmp_path / "run"
    # Many epochs of a tiny model: the job is still running when a worker is killed.
    cmd = [
        sys.executable,
        "-m",
        "ppvae",
        "fit",
        "--num-processes",
        "2",
        "--data",
        str(points),
        "--epochs",
        "500",
        "--batch-size",
        "8",
        "--latent-dim",
        "2",
        "--device",
        "cpu",
        "-q",
        "--out",
        str(run),
        "--set",
        "model.encoder_options.hidden=[16]",
        "--set",
        "model.decoder_options.hidden=[16]",
    ]
    job = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoint.safetensors").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        victim = rank_pid(job.pid, 1)
        assert victim is not None, job.communicate(timeout=5)
        os.kill(victim, signal.SIGKILL)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    lines = err.strip().splitlines()
    assert job.returncode == 1 and out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: process 1 of 2 was killed by SIGKILL; the other processes were stopped.")
    assert f"continue with: ppvae fit --resume {run} --num-processes 2" in lines[0]

    # The checkpoint is intact; a run trained on 2 processes continues on 1 (same fingerprint).
    done = len(ppvae.load(run).metrics())
    assert f"(epoch {done}," in lines[0]
    resumed = ppvae.fit(resume=run, epochs=done + 1, overrides={"train.eval_num_samples": 5}, pictures=False)
    assert [r["epoch"] for r in resumed.metrics()] == list(range(1, done + 2))

    # A worker's own error (here rank 0's: the folder is taken) is that one line, with its exit code.
    taken = subprocess.run(
        cmd[: cmd.index("--epochs")] + ["--out", str(run)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines() == [
        (
            f"Error: run folder {str(run)!r} already exists and is not empty; continue it with --resume {run}, "
            "overwrite it with --force, or pick another --out"
        )
    ]


def test_process_counts_that_cannot_work_are_refused_in_one_line():
    from click.testing import CliRunner

    from ppvae.cli import cli

    for args, expected in [
        (["--num-processes", "0"], "--num-processes must be at least 1, got 0"),
        (["--num-processes", "2", "--backend", "numpyro"], "--num-devices N"),
        (["--num-processes", "2", "--device", "cuda:1"], "names one GPU"),
    ]:
        result = CliRunner().invoke(cli, ["fit", *args])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and expected in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_failed_job_leaves_metrics_that_agree_with_its_checkpoint(points, tmp_path):
    # A process killed between the checkpoint and the metrics write leaves metrics.jsonl an
    # epoch behind; the launcher's report rewrites it from the records the checkpoint holds.
    from ppvae.backends.pyro.launch import _checkpoint_note
    from ppvae.runs.folder import RunFolder

    run = tmp_path / "run"
    ppvae.fit(data=points, out=run, epochs=2, latent_dim=2, overrides=FAST, pictures=False, progress=False)
    folder = RunFolder(run)
    folder.write_metrics(folder.read_metrics()[:1])
    note = _checkpoint_note(run, 2)
    assert note.startswith("The last checkpoint (epoch 2, step")
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2]
