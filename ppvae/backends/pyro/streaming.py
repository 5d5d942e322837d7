"""The Pyro trainer for a streamed dataset (``data.stream``): batches come from the file.

:class:`~.trainer.Trainer`'s loop, steps, checks, checkpoints and records; only
``_epoch_batches``, where the batches come from, differs. Each epoch's order is a :class:`~ppvae.data.block_shuffle.BlockShuffle` of
the training rows (a function of (seed, epoch), so resuming stays exact); a background
thread reads and prepares the next minibatches into pinned host memory, and each is
copied to the device without blocking. The per-epoch held-out ELBO uses the first
:data:`~ppvae.data.streaming.EPOCH_HELDOUT_ROWS` held-out rows (a random sample), kept on
the device; the final evaluation reads every held-out row, in chunks.
"""

from __future__ import annotations


import torch

from ppvae.data.block_shuffle import BlockShuffle
from ppvae.data.prefetch import Prefetcher
from ppvae.data.streaming import EPOCH_HELDOUT_ROWS, WINDOW_BLOCKS
from ppvae.errors import UsageError
from ppvae.backends.pyro.trainer import Trainer

__all__ = ["StreamingTrainer"]


class StreamingTrainer(Trainer):
    """:class:`~.trainer.Trainer` for a dataset whose splits are read on demand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dist = getattr(self, "dist", None)  # a multi-process job (.distributed), where there is one
        if dist is not None and dist.active:
            raise UsageError(
                "data.stream reads batches in one process; a distributed job needs the data in "
                "memory: set data.stream = false (or launch a single process)"
            )
        # A bounded, fixed sample for the per-epoch held-out ELBO (its size does not grow with the data).
        self.x_monitor = torch.as_tensor(self.dataset.heldout.head(EPOCH_HELDOUT_ROWS), device=self.device)

    def _batches(self, epoch: int, first: int, n_batches: int):
        t = self.cfg.train
        rows = self.dataset.train
        order = BlockShuffle(len(rows), t.seed, epoch, self.cfg.data.block_rows, WINDOW_BLOCKS)
        for b in range(first, n_batches):
            yield rows.take(order.positions(b * t.batch_size, (b + 1) * t.batch_size))

    def _to_host(self, batch):
        x = torch.from_numpy(batch)
        return x.pin_memory() if self.device.type == "cuda" else x

    def _epoch_batches(self, epoch: int, first: int, n_batches: int):
        """Batches read from the file by a background thread, copied to the device without blocking."""
        with Prefetcher(self._batches(epoch, first, n_batches), self._to_host) as batches:
            for host in batches:
                yield host.to(self.device, non_blocking=True), {}, 1.0, 1.0
