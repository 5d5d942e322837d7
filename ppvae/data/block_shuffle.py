"""The epoch order of a streamed training split: shuffled blocks, rows shuffled within windows.

A full permutation of a memory-mapped split would read one random row per datapoint,
which is slow once the file no longer fits in the page cache. Instead each epoch
permutes *blocks* of ``block_rows`` contiguous rows and cuts the permuted blocks into
*windows* of ``window_blocks`` blocks; rows are shuffled only within a window. Reads then
touch a few contiguous stretches of the file at a time, while a minibatch still mixes
rows from several distant places.

The order depends only on ``(seed, epoch)`` (so a resumed run draws the same batches),
and is computed one window at a time: memory is ``O(block_rows * window_blocks)``, not
proportional to the split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BlockShuffle"]


class BlockShuffle:
    """One epoch's order of ``n`` rows, by blocks.

    Parameters
    ----------
    n : int
        Rows in the split.
    seed, epoch : int
        The order is a function of these two numbers only.
    block_rows : int
        Rows per block (the last block may be shorter).
    window_blocks : int
        Blocks whose rows are shuffled together.

    Examples
    --------
    >>> order = BlockShuffle(10, seed=0, epoch=0, block_rows=3, window_blocks=2)
    >>> sorted(order.positions(0, 10).tolist()) == list(range(10))
    True
    """

    def __init__(self, n: int, seed: int, epoch: int, block_rows: int, window_blocks: int):
        self.n, self.seed, self.epoch = int(n), int(seed), int(epoch)
        self.block_rows, self.window_blocks = int(block_rows), int(window_blocks)
        n_blocks = -(-self.n // self.block_rows)
        self.blocks = np.random.default_rng([self.seed, self.epoch]).permutation(n_blocks)
        sizes = np.minimum(self.block_rows, self.n - self.blocks * self.block_rows)
        # Where each window starts in the epoch order (one entry per window, a few per GB).
        per_window = np.add.reduceat(sizes, np.arange(0, n_blocks, self.window_blocks)) if n_blocks else sizes
        self.window_starts = np.concatenate([[0], np.cumsum(per_window)])
        self._cached: tuple[int, np.ndarray] | None = None

    def window(self, w: int) -> np.ndarray:
        """Row positions of window ``w``, in their shuffled order (int64)."""
        if self._cached is not None and self._cached[0] == w:
            return self._cached[1]
        blocks = self.blocks[w * self.window_blocks : (w + 1) * self.window_blocks]
        rows = np.concatenate([np.arange(b * self.block_rows, min((b + 1) * self.block_rows, self.n)) for b in blocks])
        rows = np.random.default_rng([self.seed, self.epoch, w]).permutation(rows)
        self._cached = (w, rows)
        return rows

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Row positions number ``start`` to ``stop - 1`` of the epoch order."""
        stop = min(stop, self.n)
        parts = []
        while start < stop:
            w = int(np.searchsorted(self.window_starts, start, side="right")) - 1
            w_start, w_stop = int(self.window_starts[w]), int(self.window_starts[w + 1])
            take = min(stop, w_stop)
            parts.append(self.window(w)[start - w_start : take - w_start])
            start = take
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
