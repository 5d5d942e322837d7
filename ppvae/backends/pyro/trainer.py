"""Stochastic variational inference for the VAE: the training loop of the Pyro backend.

Each step draws a minibatch, evaluates the chosen estimator on the model/guide pair and
takes an Adam step on the networks' parameters. The loop never waits for the device
between logging points: terms are accumulated on the device and read back every
``log_every`` steps and at the end of each epoch. A non-finite loss stops training at
the next logging point, keeping the last good checkpoint; SIGINT/SIGTERM save a
checkpoint first. Batch order depends only on (seed, epoch) and the RNG states are
checkpointed, so an interrupted and resumed run ends with the same parameters as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyro
import torch

from ppvae.model.conditioning import device_labels
from ppvae.spec.config import Config
from ppvae.data import Dataset
from ppvae.errors import TrainingError, UsageError
from ppvae.inference.checkpoints import checkpoint_file
from ppvae.inference.initialization import decoder_output_bias
from ppvae.inference.metrics import active_units, layer_records
from ppvae.inference.schedules import beta_at, lr_at
from ppvae.inference.selection import is_new_best, should_stop
from ppvae.inference.training import (
    HELDOUT_NOISE_SEED,
    Interrupted,
    SignalCatcher,
    TrainState,
    fingerprint,
    interrupted_message,
    nonfinite_error,
    progress_bar,
)
from ppvae.backends.pyro import checkpoint
from ppvae.backends.pyro.distributed import Distributed
from ppvae.backends.pyro.evaluation import elbo_terms
from ppvae.backends.pyro.model import VAE, build_vae
from ppvae.backends.pyro.nets import output_bias
from ppvae.backends.pyro.objectives import terms

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda[:N]`` is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible; use cuda:0"
            )
    return torch.device(name)


@torch.no_grad()
def monitor_elbo(vae: VAE, x: torch.Tensor, y: torch.Tensor | None = None, split: str = "heldout") -> dict[str, float]:
    """The per-epoch ELBO of one split (analytic KL where available, one draw) with fixed noise.

    ``split`` names the keys (``"validation"`` or ``"heldout"``: ``<split>_elbo``, ...);
    ``y``: labels if conditional.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(HELDOUT_NOISE_SEED)
        t = elbo_terms(vae, x, y=y)
    rec, kl = t["reconstruction"].mean().item(), t["kl"].mean().item()
    layers = {
        key: {site: v.cpu().numpy() for site, v in t[key].items()} for key in ("kl_sites", "loc_sites") if key in t
    }
    return {
        f"{split}_elbo": -(rec + kl),
        f"{split}_reconstruction": rec,
        f"{split}_kl": kl,
        f"{split}_active_units": active_units(t["loc"].cpu().numpy()),
        **layer_records(split, layers),
    }


@torch.no_grad()
def start_output_bias(vae: VAE, train, likelihood: str) -> None:
    """Set the decoder's output bias to the training data's log-odds (``train.init_decoder_bias``)."""
    bias = output_bias(vae.decoder)
    bias.copy_(torch.as_tensor(decoder_output_bias(train, likelihood), device=bias.device).reshape(bias.shape))


class Trainer:
    """Trains one VAE on one dataset into one run folder.

    Parameters
    ----------
    cfg : Config
        Resolved configuration.
    dataset : Dataset
        Prepared data.
    run_dir : Path
        Where the checkpoint lives.
    progress : bool
        Show a progress bar.
    on_epoch : callable, optional
        Called with the list of records after every epoch (the run folder writes
        ``metrics.jsonl`` from it).
    """

    def __init__(
        self,
        cfg: Config,
        dataset: Dataset,
        run_dir: Path,
        progress: bool = True,
        on_epoch: Callable[[list], None] | None = None,
    ):
        self.cfg, self.dataset, self.run_dir = cfg, dataset, Path(run_dir)
        self.progress, self.on_epoch = progress, on_epoch
        # torchrun's environment makes this one process of a data-parallel job (.distributed).
        self.dist = Distributed.from_env()
        self.device = self.dist.device(resolve_device(cfg.train.device))
        self.dist.start(self.device)
        t = cfg.train
        pyro.set_rng_seed(t.seed)
        self.vae = build_vae(
            cfg.model, dataset.event_shape, dataset_size=dataset.train.shape[0], register_params=False
        ).to(self.device)
        if t.init_decoder_bias:  # before any resume's load_state_dict, which replaces it
            start_output_bias(self.vae, dataset.train, cfg.model.likelihood)
        self.dist.seed_noise(t.seed)  # the same initial weights on every rank, then its own noise
        # foreach: one multi-tensor kernel per update term instead of a Python loop over the
        # parameters; the same numbers as the loop (tests/test_pyro_golden.py), ~5 % less Adam
        # time on CPU. (fused=True is 3x faster still on CPU but rounds differently: not used.)
        self.params = list(self.vae.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=t.lr, foreach=True)
        # The split each epoch's ELBO is reported on: the validation split when there is one
        # (the held-out split then stays off the device until the final evaluation).
        self.monitor, monitor_rows, _ = dataset.monitor
        if dataset.streaming:  # rows stay in their file: .streaming.StreamingTrainer moves batches
            self.x_train = self.x_monitor = None
        else:
            self.x_train = torch.as_tensor(dataset.train, device=self.device)
            self.x_monitor = torch.as_tensor(monitor_rows, device=self.device)
        # A conditional VAE's labels live on the device beside x: a batch's labels are
        # gathered with the same indices, so no step waits for the host.
        self.y_train, self.y_monitor = device_labels(
            cfg.model, dataset, lambda y: torch.as_tensor(y, dtype=torch.long, device=self.device)
        )
        self.state = TrainState()
        self.fingerprint = fingerprint(cfg, dataset.event_shape)

    @property
    def checkpoint_path(self) -> Path:
        return checkpoint_file(self.run_dir, "last")

    @property
    def best_checkpoint_path(self) -> Path:
        return checkpoint_file(self.run_dir, "best")

    # -- checkpoints ---------------------------------------------------------------------
    def save(self) -> None:
        ranks = self.dist.gather_rng()  # every rank takes part; only rank 0 writes
        if self.dist.is_primary:
            meta = {**self.state.meta(), **ranks, "fingerprint": self.fingerprint, "backend": "pyro"}
            checkpoint.save(self.checkpoint_path, model=self.vae, optimizer=self.optimizer, meta=meta)
        # No rank goes on before the file is in place: whatever follows a save (a resume, a
        # reader of the run folder) sees the checkpoint on every rank.
        self.dist.barrier()

    def save_best(self) -> None:
        """Write this epoch's weights as the run's best checkpoint (rank 0 alone: no rank waits)."""
        if self.dist.is_primary:
            meta = {**self.state.meta(), "fingerprint": self.fingerprint, "backend": "pyro"}
            checkpoint.save(self.best_checkpoint_path, model=self.vae, optimizer=self.optimizer, meta=meta)

    def resume(self) -> None:
        """Load the run's checkpoint: weights, optimizer, RNG states and position."""
        model_state, optim_state, rng, meta = checkpoint.load(self.checkpoint_path, self.fingerprint)
        try:
            self.vae.load_state_dict(model_state)
            self.optimizer.load_state_dict(optim_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(
                f"checkpoint {str(self.checkpoint_path)!r} does not fit this model "
                f"({checkpoint.describe_mismatch(exc)}); start a new run with --out"
            ) from None
        # The optimizer state brings back the old learning rate; the config's is the one asked for.
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.train.lr
        checkpoint.restore_rng(rng)
        self.dist.restore_rng(meta, self.cfg.train.seed, meta["step"])
        self.state = TrainState.from_meta(meta)
        self.state.batch = self.dist.position(meta, self.state.batch, self.cfg.train.batch_size)
        if not self.dist.is_primary:
            self.state.partial = [0.0, 0.0, 0.0, 0.0]  # rank 0 carries the job's partial sums

    # -- the loop ------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        perm = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(self.x_train.shape[0])
        return torch.as_tensor(perm, device=self.device)

    def _epoch_batches(self, epoch: int, first: int, n_batches: int):
        """Batches ``first`` to ``n_batches - 1`` of ``epoch``: ``(x, labels, weight, scale)`` on the device.

        ``labels`` are the keyword arguments of the model and guide (``{"y": ...}`` for a
        conditional VAE); ``weight`` and ``scale`` are this process's share of a global batch
        (see :meth:`.distributed.Distributed.shard`; 1 and 1 in a single process). The
        training rows are on the device, so a batch is a gather there.
        """
        order = self._epoch_order(epoch)
        for b in range(first, n_batches):
            idx, weight, scale = self.dist.shard(order, b, self.cfg.train.batch_size)
            yield self.x_train[idx], ({} if self.y_train is None else {"y": self.y_train[idx]}), weight, scale

    def _nonfinite(self, first_bad: torch.Tensor, failure: str | None = None) -> None:
        """Raise the non-finite-loss error if a bad step was marked (or ``failure`` is given)."""
        bad_step = int(first_bad.item())
        if bad_step < 0 and failure is None:
            return
        # Steps are counted from 1 for people: "step 17" is the 17th optimizer step.
        if bad_step >= 0:
            what = f"the loss became non-finite at step {bad_step + 1}"
        else:
            short = failure if len(failure) <= 100 else failure[:97] + "..."
            what = f"the model's values became non-finite at step {self.state.step + 1} ({short})"
        raise nonfinite_error(
            what,
            self.state.epoch + 1,
            self.state.records,
            self.checkpoint_path.exists(),
            self.run_dir,
            self.cfg.train.lr,
        )

    def _stop_signal(self, signals: SignalCatcher, first_bad: torch.Tensor) -> tuple[int | None, torch.Tensor]:
        """The caught signal (and first bad step); a distributed job agrees on both at logging points."""
        if not self.dist.active:
            return signals.caught, first_bad
        if self.state.step % self.cfg.train.log_every:
            return None, first_bad
        return self.dist.agree_on_stop(signals.caught, first_bad)

    def fit(self, stop_after_steps: int | None = None) -> TrainState:
        """Train until ``train.epochs`` epochs are done (or ``stop_after_steps``, for tests).

        Raises
        ------
        TrainingError
            On a non-finite loss (the last good checkpoint is kept).
        Interrupted
            On SIGINT/SIGTERM, after a checkpoint was saved.
        """
        t, s = self.cfg.train, self.state
        n = len(self.dataset.train)
        n_batches = self.dist.num_batches(n, t.batch_size)
        dynamic = self.dataset.binarize == "dynamic"
        first_step = s.step
        # The mean gradient norm per epoch is recorded where someone watches it (TensorBoard)
        # or where it is computed anyway (clipping); otherwise no step pays for it.
        track_norm = t.log == "tensorboard" or bool(t.clip_grad_norm)
        if self.dist.active and self.dist.ddp is None:
            self.dist.wrap(self.vae)
        with SignalCatcher() as signals:
            # A resumed run that had stopped early stays stopped (the choice is the records').
            while s.epoch < t.epochs and not should_stop(
                s.records, t.early_stopping_patience, t.early_stopping_min_delta
            ):
                for group in self.optimizer.param_groups:  # the schedule's rate for this epoch
                    group["lr"] = lr_at(s.epoch, t)
                acc = torch.tensor(s.partial, dtype=torch.float64, device=self.device)
                # The gradient norm, summed on the device over this session's steps of the epoch.
                norm_sum, norm_steps = torch.zeros((), dtype=torch.float64, device=self.device), 0
                first_bad = torch.tensor(-1, device=self.device)
                # The step counter lives on the device too, so marking a bad step costs no transfer.
                step_t = torch.tensor(s.step, device=self.device)
                bar = progress_bar(n_batches, f"epoch {s.epoch + 1}/{t.epochs}", self.progress)
                bar.update(s.batch)
                started = time.perf_counter() - s.partial_seconds
                window_start, window_images = time.perf_counter(), 0
                batches = self._epoch_batches(s.epoch, s.batch, n_batches)
                for xb, labels, weight, scale in batches:
                    if dynamic:
                        xb = torch.bernoulli(xb)
                    beta = beta_at(s.step, t)
                    try:
                        # Pyro's and torch's argument and support checks run on the first step of
                        # a fit only (~2 % of a CPU step): the data were checked when prepared, and
                        # a later divergence shows as a non-finite loss at the next logging point.
                        with contextlib.nullcontext() if s.step == first_step else pyro.validation_enabled(False):
                            if self.dist.ddp is None:
                                tm = terms(
                                    self.vae.model,
                                    self.vae.guide,
                                    xb,
                                    beta=beta,
                                    estimator=t.elbo,
                                    num_particles=t.num_particles,
                                    free_bits=t.free_bits,
                                    **labels,
                                )
                            else:
                                tm = self.dist.terms(
                                    xb,
                                    beta=beta,
                                    estimator=t.elbo,
                                    num_particles=t.num_particles,
                                    free_bits=t.free_bits,
                                    weight=weight,
                                    scale=scale,
                                    **labels,
                                )
                            self.optimizer.zero_grad(set_to_none=True)
                            tm.loss.backward()
                            if t.clip_grad_norm:  # returns the norm before clipping
                                norm = torch.nn.utils.clip_grad_norm_(self.params, t.clip_grad_norm, foreach=True)
                            elif track_norm:
                                grads = [p.grad for p in self.params if p.grad is not None]
                                norm = torch.nn.utils.get_total_norm(grads, foreach=True)
                            if track_norm:
                                norm_sum += norm.detach().double()
                                norm_steps += 1
                            self.optimizer.step()
                    except UsageError:
                        # A spec the estimator cannot train (e.g. dreg with a non-Gaussian
                        # guide) is the user's to fix, not a divergence.
                        bar.close()
                        raise
                    except ValueError as exc:
                        # Non-finite weights from an earlier diverged step make Pyro's
                        # distribution checks fail here, before the next logging point.
                        bar.close()
                        self._nonfinite(first_bad, failure=str(exc).strip().splitlines()[0])
                        raise
                    b = xb.shape[0] if weight else 0
                    with torch.no_grad():
                        acc += torch.stack([tm.loss, tm.reconstruction, tm.kl, torch.ones_like(tm.loss)]).double() * b
                        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(tm.loss), step_t, first_bad)
                        step_t += 1
                    s.step += 1
                    s.batch += 1
                    window_images += b
                    bar.update(1)
                    caught, first_bad = self._stop_signal(signals, first_bad)
                    if s.step % t.log_every == 0:
                        # The logging point: the only place the loop waits for the device.
                        self._nonfinite(first_bad)
                        rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                        bar.set_postfix(loss=f"{acc[0].item() / acc[3].item():.2f}", img_s=f"{rate:.0f}")
                        window_start, window_images = time.perf_counter(), 0
                    if caught is not None or (stop_after_steps is not None and s.step >= stop_after_steps):
                        self._nonfinite(first_bad)
                        s.partial = self.dist.sum(acc).tolist()
                        s.partial_seconds = time.perf_counter() - started
                        self.save()
                        bar.close()
                        batches.close()
                        if caught is not None:
                            raise Interrupted(interrupted_message(caught, s.step, s.epoch + 1, self.run_dir))
                        return s
                bar.close()
                _, first_bad = self.dist.agree_on_stop(None, first_bad)
                self._nonfinite(first_bad)
                acc = self.dist.sum(acc)  # the job's sums: rank 0 records them
                seconds = time.perf_counter() - started
                loss, rec, kl, count = (acc / acc[3]).tolist()[:3] + [acc[3].item()]
                record = {
                    "epoch": s.epoch + 1,
                    "step": s.step,
                    "loss": loss,
                    "reconstruction": rec,
                    "kl": kl,
                    "beta": beta_at(s.step - 1, t),
                    "lr": lr_at(s.epoch, t),
                    "seconds": seconds,
                    "images_per_s": count / seconds,
                    **({"grad_norm": norm_sum.item() / norm_steps} if norm_steps else {}),
                    **(
                        monitor_elbo(self.vae, self.x_monitor, self.y_monitor, self.monitor)
                        if self.dist.is_primary
                        else {}
                    ),
                }
                s.records.append(record)
                s.epoch += 1
                s.batch, s.partial, s.partial_seconds = 0, [0.0, 0.0, 0.0, 0.0], 0.0
                # Only rank 0 holds the validation ELBO; it decides, and every rank stops with it.
                stop_early = should_stop(s.records, t.early_stopping_patience, t.early_stopping_min_delta)
                stop_early = self.dist.any(stop_early, self.device)
                if is_new_best(s.records, t.early_stopping_min_delta):
                    self.save_best()
                if stop_early or s.epoch % t.checkpoint_every == 0 or s.epoch == t.epochs:
                    self.save()
                if self.on_epoch is not None:
                    self.on_epoch(list(s.records))
                log.info("epoch %d: %s", s.epoch, json.dumps(record))
                if stop_early:
                    break
        return s
