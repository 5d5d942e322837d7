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
PER_RANK = 10            # batch per process; the single process takes WORLD * PER_RANK
N_POINTS = 79            # 63 train / 16 held out: the epoch's last global batch (3 points) splits 2 + 1
STEPS = 4                # one whole epoch: 20 + 20 + 20 + 3 points
LATENT = 2
SETTINGS = {**FAST, "model.encoder_options.hidden": [16], "model.decoder_options.hidden": [16],
            "model.latent_dim": LATENT, "data.binarize": "static", "train.log_every": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        return table[k, start:start + b].to(dtype=dtype, device=device)

    normal._standard_normal = standard_normal


def _train_rank(rank: int, port: int, data: str, out: str) -> None:
    """One process of the job (run by torch.multiprocessing): train STEPS steps, save the weights."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    align_noise(rank, WORLD)
    run = ppvae.fit(out=Path(out) / "run", overrides={**SETTINGS, "data.source": data,
                                                      "train.batch_size": PER_RANK},
                    stop_after_steps=STEPS, pictures=False)
    np.savez(Path(out) / f"rank{rank}.npz", **run.trained.state_arrays())


def test_two_processes_match_one_process_with_the_global_batch(points, tmp_path, monkeypatch):
    torch.multiprocessing.start_processes(_train_rank, args=(free_port(), str(points), str(tmp_path)),
                                          nprocs=WORLD, start_method="spawn")
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(WORLD)]
    # DDP averages the gradients, so every rank takes the same Adam steps, bit for bit.
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    # Only rank 0 wrote the run folder (no metrics: the job stopped inside the first epoch).
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.safetensors", "config.toml",
                                                                   "data.json", "metrics.jsonl"]

    # Restored after the test: align_noise replaces torch's standard-normal draw.
    monkeypatch.setattr(torch.distributions.normal, "_standard_normal", torch.distributions.normal._standard_normal)
    align_noise(0, 1)
    single = ppvae.fit(out=tmp_path / "single", overrides={**SETTINGS, "data.source": str(points),
                                                             "train.batch_size": WORLD * PER_RANK},
                       stop_after_steps=STEPS, pictures=False).trained.state_arrays()
    # Same points, same noise, same weights: only the order of float32 sums differs (DDP
    # averages the two halves' gradients); measured ~3e-8 after 4 steps, while a wrong
    # weight for the uneven last batch shows as ~5e-4.
    for name, value in single.items():
        np.testing.assert_allclose(ranks[0][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
