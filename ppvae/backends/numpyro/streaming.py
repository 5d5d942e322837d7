"""The NumPyro trainer for a streamed dataset (``data.stream``): the epoch in chunks.

The in-memory trainer runs a whole epoch as one compiled ``lax.scan`` over data already
on the device. Here the training rows stay in their file: the epoch's order is a
:class:`~ppvae.data.block_shuffle.BlockShuffle` (a function of (seed, epoch)), and a
background thread reads and prepares *chunks* of :attr:`StreamingTrainer.chunk_batches`
minibatches, each sent to the device and run by a compiled scan over the chunk. An epoch
is then a few compiled calls (at most two chunk shapes and the last, smaller minibatch:
three programs, compiled once). JAX dispatches asynchronously, so the next chunk is
prepared while the device works on the current one.

Noise: chunk ``c`` of epoch ``e`` splits ``fold_in(fold_in(key, e), c)`` into one key per
step, so a resumed run (whole epochs, as in memory) repeats it exactly.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ppvae.data.block_shuffle import BlockShuffle
from ppvae.data.prefetch import Prefetcher
from ppvae.data.streaming import EPOCH_HELDOUT_ROWS, WINDOW_BLOCKS
from ppvae.inference.schedules import beta_at
from ppvae.backends.numpyro.trainer import Trainer

__all__ = ["StreamingTrainer"]

#: Bytes of prepared float32 rows per chunk sent to the device (bounds host and device memory).
CHUNK_BYTES = 64 * 2**20


class StreamingTrainer(Trainer):
    """:class:`~.trainer.Trainer` for a dataset whose splits are read on demand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t = self.cfg.train
        # Per-epoch held-out ELBO on a bounded, fixed sample (the first held-out rows).
        self.x_monitor = jax.device_put(jnp.asarray(self.dataset.heldout.head(EPOCH_HELDOUT_ROWS)), self.device)
        batch_bytes = t.batch_size * self.dataset.num_features * 4
        #: Minibatches per compiled call.
        self.chunk_batches = max(1, CHUNK_BYTES // batch_bytes)
        self._chunk_fn = jax.jit(self._chunk)

    def _chunk(self, params, opt_state, keys, xs, betas):
        self.compilations += 1  # runs only while JAX traces (compiles) this function

        def body(carry, inputs):
            params, opt_state = carry
            xb, beta, k = inputs
            params, opt_state, values = self._step(params, opt_state, k, xb, beta)
            return (params, opt_state), values

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), (xs, betas, keys))
        return params, opt_state, values

    def _chunks(self, epoch: int, n_full: int, rest: int):
        """Host-side ``(first_step, rows)``: chunks of full minibatches, then the last smaller one."""
        t = self.cfg.train
        rows = self.dataset.train
        order = BlockShuffle(len(rows), t.seed, epoch, self.cfg.data.block_rows, WINDOW_BLOCKS)
        bs = t.batch_size
        for first in range(0, n_full, self.chunk_batches):
            m = min(self.chunk_batches, n_full - first)
            x = rows.take(order.positions(first * bs, (first + m) * bs))
            yield first, x.reshape((m, bs) + x.shape[1:])
        if rest:
            yield n_full, rows.take(order.positions(n_full * bs, n_full * bs + rest))

    def _train_epoch(self, epoch: int, n_full: int, rest: int):
        """The epoch as a few compiled scans over chunks read from the file, then the last small batch."""
        t, s = self.cfg.train, self.state
        epoch_key = jax.random.fold_in(self.train_key, epoch)
        params, opt_state = self.params, self.opt_state
        started = time.perf_counter()
        compile_before = self.compile_seconds
        parts = []
        with Prefetcher(self._chunks(epoch, n_full, rest), depth=2) as chunks:
            for c, (first, x) in enumerate(chunks):
                key = jax.random.fold_in(epoch_key, c)
                if first < n_full:
                    m = x.shape[0]
                    xs = jax.device_put(x, self.device)
                    betas = jnp.asarray([beta_at(s.step + first + i, t) for i in range(m)], dtype=jnp.float32)
                    keys = jax.random.split(key, m)
                    fn = self._program(("chunk", m), self._chunk_fn, params, opt_state, keys, xs, betas)
                    params, opt_state, values = fn(params, opt_state, keys, xs, betas)
                    parts.append((values, t.batch_size))
                else:
                    xb = jax.device_put(x, self.device)
                    beta = jnp.float32(beta_at(s.step + n_full, t))
                    fn = self._program("step", self._step_fn, params, opt_state, key, xb, beta)
                    params, opt_state, values = fn(params, opt_state, key, xb, beta)
                    parts.append((values[None], rest))
        parts = [(np.asarray(v, dtype=np.float64), b) for v, b in parts]  # waits for the device
        # Compilation happens inside the loop here; it is not training time.
        seconds = time.perf_counter() - started - (self.compile_seconds - compile_before)
        return params, opt_state, parts, seconds
