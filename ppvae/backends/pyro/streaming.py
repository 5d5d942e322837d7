"""The Pyro training loop for a streamed dataset (``data.stream``): batches come from the file.

Same steps, checks, checkpoints and records as :class:`~.trainer.Trainer`; only the data
path differs. Each epoch's order is a :class:`~ppvae.data.block_shuffle.BlockShuffle` of
the training rows (a function of (seed, epoch), so resuming stays exact); a background
thread reads and prepares the next minibatches into pinned host memory, and each is
copied to the device without blocking. The per-epoch held-out ELBO uses the first
:data:`~ppvae.data.streaming.EPOCH_HELDOUT_ROWS` held-out rows (a random sample), kept on
the device; the final evaluation reads every held-out row, in chunks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time

import pyro
import torch

from ...data.block_shuffle import BlockShuffle
from ...data.prefetch import Prefetcher
from ...data.streaming import EPOCH_HELDOUT_ROWS, WINDOW_BLOCKS
from ...errors import UsageError
from ...schedules import beta_at
from ...training import Interrupted, SignalCatcher, TrainState, interrupted_message, progress_bar
from .objectives import terms
from .trainer import Trainer, heldout_elbo

__all__ = ["StreamingTrainer"]

log = logging.getLogger(__name__)


class StreamingTrainer(Trainer):
    """:class:`~.trainer.Trainer` for a dataset whose splits are read on demand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dist = getattr(self, "dist", None)  # a multi-process job (.distributed), where there is one
        if dist is not None and dist.active:
            raise UsageError("data.stream reads batches in one process; a distributed job needs the data in "
                             "memory: set data.stream = false (or launch a single process)")
        # A bounded, fixed sample for the per-epoch held-out ELBO (its size does not grow with the data).
        self.x_heldout = torch.as_tensor(self.dataset.heldout.head(EPOCH_HELDOUT_ROWS), device=self.device)

    def _batches(self, epoch: int, first: int, n_batches: int):
        t = self.cfg.train
        rows = self.dataset.train
        order = BlockShuffle(len(rows), t.seed, epoch, self.cfg.data.block_rows, WINDOW_BLOCKS)
        for b in range(first, n_batches):
            yield rows.take(order.positions(b * t.batch_size, (b + 1) * t.batch_size))

    def _to_host(self, batch):
        x = torch.from_numpy(batch)
        return x.pin_memory() if self.device.type == "cuda" else x

    def fit(self, stop_after_steps: int | None = None) -> TrainState:
        """Train until ``train.epochs`` epochs are done (or ``stop_after_steps``); see :meth:`Trainer.fit`."""
        t, s = self.cfg.train, self.state
        n = len(self.dataset.train)
        n_batches = math.ceil(n / t.batch_size)
        dynamic = self.dataset.binarize == "dynamic"
        first_step = s.step
        with SignalCatcher() as signals:
            while s.epoch < t.epochs:
                acc = torch.tensor(s.partial, dtype=torch.float64, device=self.device)
                first_bad = torch.tensor(-1, device=self.device)
                step_t = torch.tensor(s.step, device=self.device)
                bar = progress_bar(n_batches, f"epoch {s.epoch + 1}/{t.epochs}", self.progress)
                bar.update(s.batch)
                started = time.perf_counter() - s.partial_seconds
                window_start, window_images = time.perf_counter(), 0
                with Prefetcher(self._batches(s.epoch, s.batch, n_batches), self._to_host) as batches:
                    for host in batches:
                        xb = host.to(self.device, non_blocking=True)
                        if dynamic:
                            xb = torch.bernoulli(xb)
                        beta = beta_at(s.step, t)
                        try:
                            # Argument checks on the first step of a fit only, as in Trainer.fit.
                            with contextlib.nullcontext() if s.step == first_step else pyro.validation_enabled(False):
                                tm = terms(self.vae.model, self.vae.guide, xb, beta=beta,
                                           estimator=t.elbo, num_particles=t.num_particles)
                                self.optimizer.zero_grad(set_to_none=True)
                                tm.loss.backward()
                                self.optimizer.step()
                        except UsageError:
                            bar.close()
                            raise
                        except ValueError as exc:
                            # Non-finite weights from an earlier diverged step fail Pyro's checks here.
                            bar.close()
                            self._nonfinite(first_bad, failure=str(exc).strip().splitlines()[0])
                            raise
                        b = xb.shape[0]
                        with torch.no_grad():
                            acc += torch.stack([tm.loss, tm.reconstruction, tm.kl,
                                                torch.ones_like(tm.loss)]).double() * b
                            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(tm.loss), step_t, first_bad)
                            step_t += 1
                        s.step += 1
                        s.batch += 1
                        window_images += b
                        bar.update(1)
                        if s.step % t.log_every == 0:
                            self._nonfinite(first_bad)
                            rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                            bar.set_postfix(loss=f"{acc[0].item() / acc[3].item():.2f}", img_s=f"{rate:.0f}")
                            window_start, window_images = time.perf_counter(), 0
                        caught = signals.caught
                        if caught is not None or (stop_after_steps is not None and s.step >= stop_after_steps):
                            self._nonfinite(first_bad)
                            s.partial = acc.tolist()
                            s.partial_seconds = time.perf_counter() - started
                            self.save()
                            bar.close()
                            if caught is not None:
                                raise Interrupted(interrupted_message(caught, s.step, s.epoch + 1, self.run_dir))
                            return s
                bar.close()
                self._nonfinite(first_bad)
                seconds = time.perf_counter() - started
                loss, rec, kl, count = (acc / acc[3]).tolist()[:3] + [acc[3].item()]
                record = {
                    "epoch": s.epoch + 1, "step": s.step, "loss": loss, "reconstruction": rec, "kl": kl,
                    "beta": beta_at(s.step - 1, t), "seconds": seconds, "images_per_s": count / seconds,
                    **heldout_elbo(self.vae, self.x_heldout),
                }
                s.records.append(record)
                s.epoch += 1
                s.batch, s.partial, s.partial_seconds = 0, [0.0, 0.0, 0.0, 0.0], 0.0
                if s.epoch % t.checkpoint_every == 0 or s.epoch == t.epochs:
                    self.save()
                if self.on_epoch is not None:
                    self.on_epoch(list(s.records))
                log.info("epoch %d: %s", s.epoch, json.dumps(record))
        return s
