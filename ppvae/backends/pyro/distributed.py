"""Data-parallel training of the Pyro backend on several processes (torch.distributed + DDP).

Every process of a job runs the ordinary ``ppvae fit`` code path; this module is what
changes when ``torchrun`` (or ``ppvae fit --num-processes``, see :mod:`.launch`) has set
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``:

- the process group is set up (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per process:
  ``cuda:LOCAL_RANK``);
- every rank draws the same epoch permutation (it depends only on (seed, epoch)); the
  global batch of ``world * batch_size`` indices is cut into ``world`` contiguous blocks
  and rank r trains on block r. That is a distributed sampler, written here rather than
  taken from ``torch.utils.data.DistributedSampler`` because the latter strides
  (``indices[rank::world]``) and pads the last batch with repeated points; contiguous
  blocks make N processes with batch B/N see exactly the points one process sees with
  batch B, and the short last batch is weighted instead of padded, so no point counts
  twice;
- gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`; a
  rank's loss carries the weight ``world * b_r / m`` (``b_r`` its rows, ``m`` the
  global batch), so the average over ranks is the mean over the global batch even when
  the last batch does not split evenly; the ``"data"`` plate's scale is ``N / m``, the
  full dataset over the global batch;
- ranks other than 0 draw their own noise (z samples, binarization), seeded from
  (seed, rank); rank 0 keeps the single-process stream, so one process is unchanged;
- epoch metrics are summed over ranks before rank 0 records them; only rank 0 writes
  into the run folder. A checkpoint carries every rank's RNG state, so a resumed job on
  the same number of processes continues with the same draws.

With ``WORLD_SIZE`` unset or 1, :class:`Distributed` is inactive and every method is the
identity, so the single-process trainer does not change.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import inspect
import math
import os
from typing import Any

import numpy as np
import torch
from pyro import poutine
from torch import nn

from ppvae.errors import TrainingError, UsageError
from ppvae.backends.pyro.objectives import Terms, terms

__all__ = ["Distributed", "env_world", "seed_for_rank", "PEER_LOST"]

#: Start of the message of a rank whose partner process vanished (the launcher reports
#: the process that failed first, not this consequence).
PEER_LOST = "another process of the distributed job stopped"

# A collective that waits longer than this is a lost peer, not slow work.
TIMEOUT = datetime.timedelta(minutes=10)


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment torchrun sets; ``(0, 1, 0)`` without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them); unset them to train in one process"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(
            f"RANK={rank} and WORLD_SIZE={world} do not fit together; launch with torchrun, "
            "or unset them to train in one process"
        )
    return rank, world, local


def seed_for_rank(seed: int, rank: int) -> int:
    """The torch seed of rank ``rank``'s noise: independent streams from (seed, rank)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _StepModule(nn.Module):
    """What DDP wraps: its ``forward`` evaluates the estimator, so DDP can average the gradients."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x, beta, estimator: str, num_particles: int, scale: float, y=None, free_bits: float = 0.0):
        model, guide = self.vae.model, self.vae.guide
        if scale != 1.0:
            # Both sites scaled alike: β (a ratio of scales) is unchanged, the plate's scale
            # becomes N / (global batch).
            model, guide = poutine.scale(model, scale=scale), poutine.scale(guide, scale=scale)
        labels = {} if y is None else {"y": y}
        tm = terms(
            model, guide, x, beta=beta, estimator=estimator, num_particles=num_particles, free_bits=free_bits, **labels
        )
        # Tensors only: DDP looks for them in the output.
        return tm.loss, tm.reconstruction, tm.kl, tm.beta, torch.tensor(tm.data_scale)


class Distributed:
    """The process group of one training job, or an inactive stand-in for a single process.

    Parameters
    ----------
    rank, world, local_rank : int
        This process's place in the job (``world == 1``: not distributed).

    Examples
    --------
    >>> d = Distributed(0, 1, 0)
    >>> d.active, d.is_primary, d.num_batches(100, 32)
    (False, True, 4)
    """

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.ddp: nn.Module | None = None
        self._started = False

    @classmethod
    def from_env(cls) -> "Distributed":
        """The job torchrun described in the environment (inactive without one)."""
        return cls(*env_world())

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_primary(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    # -- set-up ----------------------------------------------------------------------------
    def device(self, device: torch.device) -> torch.device:
        """This rank's device: CUDA jobs put process ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``."""
        if not self.active or device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise UsageError(
                f"process {self.rank} needs cuda:{self.local_rank}, but only {count} CUDA device(s) "
                f"are visible; start at most {count} processes per node, or use --device cpu"
            )
        return torch.device("cuda", self.local_rank)

    def start(self, device: torch.device) -> None:
        """Join the process group (``nccl`` for CUDA, ``gloo`` otherwise)."""
        if not self.active or self._started:
            return
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=TIMEOUT)
            # Leave the group when the process ends, whichever way training ended.
            atexit.register(self.close)
        if dist.get_world_size() != self.world:  # pragma: no cover - a foreign process group
            raise UsageError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says {self.world}")
        self._started = True

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self._started:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._started = False

    def seed_noise(self, seed: int) -> None:
        """Give ranks other than 0 their own noise stream (after the identical initialization)."""
        if self.active and self.rank > 0:
            torch.manual_seed(seed_for_rank(seed, self.rank))

    def wrap(self, vae: nn.Module) -> None:
        """Wrap the VAE for gradient averaging (after its weights are final: DDP broadcasts rank 0's)."""
        if not self.active:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = next(vae.parameters()).device
        # static_graph: the same parameters take part in every step, and any that never get
        # a gradient (a component the estimator does not use) are allowed.
        # Buffers are not trained and start equal on every rank: no broadcast per step.
        sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else {"broadcast_buffers": False}
        )
        self.ddp = DDP(
            _StepModule(vae), device_ids=[device] if device.type == "cuda" else None, static_graph=True, **sync
        )

    # -- batches ---------------------------------------------------------------------------
    def num_batches(self, n: int, batch_size: int) -> int:
        """Steps per epoch: global batches of ``world * batch_size`` points."""
        return math.ceil(n / (self.world * batch_size))

    def shard(self, order: torch.Tensor, batch: int, batch_size: int) -> tuple[torch.Tensor, float, float]:
        """This rank's indices of global batch ``batch``, its loss weight and its plate-scale factor.

        The global batch ``order[batch*G:(batch+1)*G]`` (``G = world * batch_size``) is cut
        into ``world`` contiguous blocks as even as possible; a rank left without a point
        (a last batch shorter than ``world``) trains on one point with weight 0.
        """
        if not self.active:
            return order[batch * batch_size : (batch + 1) * batch_size], 1.0, 1.0
        g = self.world * batch_size
        rows = order[batch * g : (batch + 1) * g]
        m = int(rows.shape[0])
        if m == g:
            return rows[self.rank * batch_size : (self.rank + 1) * batch_size], 1.0, 1.0 / self.world
        base, extra = divmod(m, self.world)
        start = self.rank * base + min(self.rank, extra)
        b = base + (self.rank < extra)
        if b == 0:
            return rows[:1], 0.0, 1.0 / m
        return rows[start : start + b], self.world * b / m, b / m

    # -- the step --------------------------------------------------------------------------
    def terms(
        self,
        xb: torch.Tensor,
        *,
        beta,
        estimator: str,
        num_particles: int,
        weight: float,
        scale: float,
        y: torch.Tensor | None = None,
        free_bits: float = 0.0,
    ) -> Terms:
        """The estimator's terms through DDP; ``loss`` has this rank's value and the weighted gradient."""
        assert self.ddp is not None
        try:
            loss, rec, kl, beta_t, data_scale = self.ddp(
                xb, beta, estimator, num_particles, scale, y=y, free_bits=free_bits
            )
        except RuntimeError as exc:
            self._peer_lost(exc)
            raise
        if weight != 1.0:
            # The value stays the rank's mean loss (for the metrics), the gradient is weighted.
            loss = loss * weight + (loss - loss * weight).detach()
        return Terms(loss, rec, kl, beta_t, float(data_scale), int(xb.shape[0]))

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, where DDP all-reduces; a vanished peer becomes a TrainingError."""
        try:
            loss.backward()
        except RuntimeError as exc:
            self._peer_lost(exc)
            raise

    @staticmethod
    def _peer_lost(exc: Exception) -> None:
        text = str(exc)
        if any(
            s in text
            for s in ("Connection closed", "Connection reset", "Broken pipe", "NCCL", "gloo", "Timed out", "timed out")
        ):
            raise TrainingError(f"{PEER_LOST} ({text.strip().splitlines()[0][:120]})") from None

    # -- collectives -------------------------------------------------------------------------
    def _reduce(self, tensor: torch.Tensor, op: str) -> torch.Tensor:
        if not self.active:
            return tensor
        import torch.distributed as dist

        out = tensor.clone()
        try:
            dist.all_reduce(out, op=getattr(dist.ReduceOp, op))
        except RuntimeError as exc:
            self._peer_lost(exc)
            raise
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (a copy; the identity in one process)."""
        return self._reduce(tensor, "SUM")

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Maximum over ranks (a copy; the identity in one process)."""
        return self._reduce(tensor, "MAX")

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on any rank (rank 0's decision, shared with the others)."""
        if not self.active:
            return flag
        return bool(self.max(torch.tensor(int(flag), device=device)).item())

    def agree_on_stop(self, caught: int | None, first_bad: torch.Tensor) -> tuple[int | None, torch.Tensor]:
        """Share a caught signal and the first bad step, so every rank stops at the same step."""
        if not self.active:
            return caught, first_bad
        both = torch.stack([first_bad.to(torch.long).reshape(()), torch.tensor(caught or 0, device=first_bad.device)])
        both = self.max(both)
        sig = int(both[1].item())
        return (sig or None), both[0]

    # -- RNG states ----------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, str]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return {k: base64.b64encode(v.numpy().tobytes()).decode() for k, v in state.items()}

    def gather_rng(self) -> dict[str, Any]:
        """Every rank's RNG states (for rank 0's checkpoint meta); every rank must call it."""
        if not self.active:
            return {}
        import torch.distributed as dist

        states: list = [None] * self.world
        try:
            dist.all_gather_object(states, self._rng_state())
        except RuntimeError as exc:
            self._peer_lost(exc)
            raise
        return {"world_size": self.world, "rank_rng": {str(r): s for r, s in enumerate(states)}}

    def barrier(self) -> None:
        """Wait until every rank reaches this point (e.g. rank 0 has written the checkpoint)."""
        if not self.active:
            return
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError as exc:
            self._peer_lost(exc)
            raise

    def restore_rng(self, meta: dict, seed: int, step: int) -> None:
        """Put back this rank's saved RNG states; ranks the checkpoint does not know get (seed, rank, step)."""
        if not self.active or self.rank == 0:
            return  # rank 0's states are the checkpoint's own rng.* arrays
        saved = meta.get("rank_rng", {}).get(str(self.rank))
        if saved is None:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, step]).generate_state(1)[0]))
            return
        torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(saved["cpu"]), np.uint8).copy()))
        if "cuda" in saved and torch.cuda.is_available():
            cuda = torch.from_numpy(np.frombuffer(base64.b64decode(saved["cuda"]), np.uint8).copy())
            torch.cuda.set_rng_state(cuda, device=torch.cuda.current_device())

    def position(self, meta: dict, batch: int, batch_size: int) -> int:
        """The batch to continue an epoch at when the checkpoint came from another number of processes."""
        old_world = int(meta.get("world_size", 1))
        if batch == 0 or old_world == self.world:
            return batch
        done = batch * old_world * batch_size
        if done % (self.world * batch_size):
            raise TrainingError(
                f"the checkpoint stopped {done} points into an epoch on {old_world} process(es), which is not a "
                f"whole number of global batches of {self.world} x {batch_size}; resume on {old_world} process(es), "
                "or after the epoch's end"
            )
        return done // (self.world * batch_size)
