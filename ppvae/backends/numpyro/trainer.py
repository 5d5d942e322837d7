"""SVI for the VAE with JAX: the NumPyro backend's training loop.

The whole epoch is one jit-compiled call: ``lax.scan`` over the full minibatches, with
the training data on the device and the batch order and β values passed in as arrays, so
every epoch reuses the same compiled program (no recompilation between epochs; the
``compilations`` counter proves it). A last, smaller minibatch, if any, goes through a
separately compiled single step. Optimization is optax's Adam on the params that the
model and guide register through ``eqx_module``.

Checks happen between epochs: a non-finite loss stops training with the step named and
the last good checkpoint kept; SIGINT/SIGTERM finish the running epoch (one compiled
call), save a checkpoint and stop. Batch order depends only on (seed, epoch) and the
noise only on (seed, epoch, step), so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers

from ppvae.model.conditioning import device_labels
from ppvae.spec.config import Config
from ppvae.data import Dataset
from ppvae.errors import UsageError
from ppvae.inference.checkpoints import checkpoint_file
from ppvae.inference.initialization import decoder_output_bias
from ppvae.inference.metrics import active_units, layer_records
from ppvae.inference.schedules import beta_at, lr_at, lr_table
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
from ppvae.backends.numpyro import checkpoint
from ppvae.backends.numpyro.evaluation import Evaluator
from ppvae.backends.numpyro.model import build_vae, initial_params
from ppvae.backends.numpyro.nets import output_bias
from ppvae.backends.numpyro.objectives import LossKeys, loss_keys, terms
from ppvae.backends.numpyro.sharding import data_parallel


def resolve_device(name: str):
    """``auto`` -> JAX's default device (a GPU when JAX sees one); ``cpu``; ``cuda[:N]``."""
    if name == "auto":
        return jax.devices()[0]
    if name == "cpu":
        return jax.devices("cpu")[0]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        raise UsageError(
            f"--device {name}: JAX sees no GPU here (jax {jax.__version__}); use --device cpu "
            "or install a CUDA build of jaxlib"
        ) from None
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= len(gpus):
        raise UsageError(f"--device {name}: only {len(gpus)} GPU(s) are visible to JAX; use cuda:0")
    return gpus[index]


def step_keys(key) -> tuple[jax.Array, LossKeys]:
    """A training step's keys from its key: the binarization key and the loss's :class:`LossKeys`.

    ``jax.vmap(step_keys)`` over an epoch's step keys gives every step's keys at once, the
    same values as one step at a time.
    """
    binarize_key, loss_key = jax.random.split(key)
    return binarize_key, loss_keys(loss_key)


def start_output_bias(params: dict, vae, train, likelihood: str) -> dict:
    """``params`` with the decoder's output bias at the training data's log-odds (``train.init_decoder_bias``)."""
    where = output_bias(vae.modules["decoder"])
    decoder = params["decoder$params"]
    bias = jnp.asarray(decoder_output_bias(train, likelihood)).reshape(where(decoder).shape)
    return {**params, "decoder$params": eqx.tree_at(where, decoder, bias)}


class Trainer:
    """Trains one VAE on one dataset into one run folder (NumPyro backend)."""

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
        t = cfg.train
        self.device = resolve_device(t.device)
        #: train.num_devices > 1: the mesh and shardings (see .sharding); None on one device.
        self.parallel = data_parallel(t.num_devices, t.device, t.batch_size)
        if self.parallel is not None and dataset.streaming:
            raise UsageError(
                "train.num_devices > 1 needs the training data in memory; it does not work with "
                "data.stream = true yet: set one of them back (--num-devices 1)"
            )
        init_key, self.train_key = jax.random.split(jax.random.PRNGKey(t.seed))
        self.vae = build_vae(cfg.model, dataset.event_shape, init_key, dataset_size=dataset.train.shape[0])
        self.optimizer = optax.adam(t.lr if t.lr_schedule == "constant" else self._lr_schedule())
        if t.clip_grad_norm:  # the gradient rescaled to the norm before Adam sees it, as in the Pyro backend
            self.optimizer = optax.chain(optax.clip_by_global_norm(t.clip_grad_norm), self.optimizer)
        # The mean gradient norm per epoch is recorded where someone watches it (TensorBoard)
        # or where it is computed anyway (clipping); otherwise no step pays for it.
        self.track_norm = t.log == "tensorboard" or bool(t.clip_grad_norm)
        params = initial_params(self.vae)
        if t.init_decoder_bias:  # before any resume, which replaces the params
            params = start_output_bias(params, self.vae, dataset.train, cfg.model.likelihood)
        self.params = self._place(params)
        self.opt_state = self._place(self.optimizer.init(self.params))
        # The split each epoch's ELBO is reported on: the validation split when there is one
        # (the held-out split then stays off the device until the final evaluation).
        self.monitor, monitor_rows, _ = dataset.monitor
        if dataset.streaming:  # rows stay in their file: .streaming.StreamingTrainer moves chunks
            self.x_train = self.x_monitor = None
        else:
            self.x_train = self._place(jnp.asarray(dataset.train))
            self.x_monitor = self._place(jnp.asarray(monitor_rows))
        # A conditional VAE's labels sit on the device beside x and are gathered with the
        # batch indices inside the compiled epoch; None (no labels) is an empty pytree to jit.
        self.y_train, self.y_monitor = device_labels(cfg.model, dataset, lambda y: self._place(jnp.asarray(y)))
        self.evaluator = Evaluator(self.vae)
        self.state = TrainState()
        self.fingerprint = fingerprint(cfg, dataset.event_shape)
        #: How many times the epoch function was traced (= compiled); stays 1 across epochs.
        self.compilations = 0
        self._epoch_fn = jax.jit(self._epoch)
        self._programs: dict = {}
        self.compile_seconds = 0.0
        self._step_fn = jax.jit(self._step)

    def _lr_schedule(self):
        """The spec's learning rate by optimizer step, for optax: the rate of the step's epoch.

        optax counts the updates in the optimizer state, so a resumed run continues the
        schedule exactly. (A constant rate stays a plain number: its optimizer state is the
        one checkpoints have always had.)
        """
        t = self.cfg.train
        steps_per_epoch = -(-len(self.dataset.train) // t.batch_size)
        table = jnp.asarray(lr_table(t), dtype=jnp.float32)
        return lambda count: table[jnp.minimum(count // steps_per_epoch, table.shape[0] - 1)]

    def _place(self, tree):
        """Arrays on the training device, or whole on every device of a data-parallel run."""
        return jax.device_put(tree, self.device) if self.parallel is None else self.parallel.replicate(tree)

    @property
    def checkpoint_path(self) -> Path:
        return checkpoint_file(self.run_dir, "last")

    @property
    def best_checkpoint_path(self) -> Path:
        return checkpoint_file(self.run_dir, "best")

    # -- one step, one epoch -----------------------------------------------------------------
    def _loss(self, params, key, xb, beta, yb=None):
        model = handlers.substitute(self.vae.model, data=params)
        guide = handlers.substitute(self.vae.guide, data=params)
        t = terms(
            model,
            guide,
            key,
            xb,
            beta,
            estimator=self.cfg.train.elbo,
            num_particles=self.cfg.train.num_particles,
            free_bits=self.cfg.train.free_bits,
            y=yb,
        )
        return t.loss, jnp.stack([t.loss, t.reconstruction, t.kl])

    def _step(self, params, opt_state, key, xb, beta, yb=None):
        """One optimizer step; ``key`` is the step's key or its :func:`step_keys` (the same draws)."""
        binarize_key, loss_key = key if isinstance(key, tuple) else step_keys(key)
        if self.dataset.binarize == "dynamic":
            # Drawn on rows flattened to (B, D): the same bits as on (B, H, W) (they are drawn
            # flat and reshaped), but XLA's elementwise loops then run over rows of D = H*W
            # values instead of W (28 for MNIST), which vectorize better.
            flat = jax.random.bernoulli(binarize_key, xb.reshape(xb.shape[0], -1))
            xb = flat.astype(xb.dtype).reshape(xb.shape)
        (_, values), grads = jax.value_and_grad(self._loss, has_aux=True)(params, loss_key, xb, beta, yb)
        if self.track_norm:  # a 4th value per step; the programs of other runs stay as they were
            norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
            values = jnp.concatenate([values, norm[None].astype(values.dtype)])
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, values

    def _epoch(self, params, opt_state, key, x_train, batches, betas, y_train=None):
        self.compilations += 1  # runs only while JAX traces (compiles) this function
        # Every step's keys, split here in one batched call: the scanned body then runs no
        # key split (each is a threefry loop in XLA), and the draws are the ones it would make.
        keys = jax.vmap(step_keys)(jax.random.split(key, batches.shape[0]))

        def body(carry, inputs):
            params, opt_state = carry
            idx, beta, k = inputs
            xb, yb = x_train[idx], None if y_train is None else y_train[idx]
            if self.parallel is not None:  # each device takes its rows; XLA all-reduces the gradient
                xb, yb = self.parallel.constrain_batch(xb), self.parallel.constrain_batch(yb)
            params, opt_state, values = self._step(params, opt_state, k, xb, beta, yb)
            if self.parallel is not None:
                params, opt_state = self.parallel.constrain_replicated((params, opt_state))
            return (params, opt_state), values

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), (batches, betas, keys))
        return params, opt_state, values

    def _program(self, name: str, fn, *args):
        """``fn`` compiled ahead of time for these argument shapes, once (shapes never change)."""
        if name not in self._programs:
            started = time.perf_counter()
            self._programs[name] = fn.lower(*args).compile()
            self.compile_seconds += time.perf_counter() - started
        return self._programs[name]

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> None:
        """Write the last checkpoint (or one at ``path``)."""
        checkpoint.save(
            path or self.checkpoint_path,
            params=self.params,
            opt_state=self.opt_state,
            key=self.train_key,
            meta={**self.state.meta(), "fingerprint": self.fingerprint, "backend": "numpyro"},
        )

    def save_best(self) -> None:
        """Write this epoch's weights as the run's best checkpoint."""
        self.save(self.best_checkpoint_path)

    def resume(self) -> None:
        """Load the run's checkpoint: params, optimizer state, key and position."""
        params, opt_state, key, meta = checkpoint.load(
            self.checkpoint_path, self.params, self.opt_state, self.fingerprint
        )
        self.params = self._place(params)
        # A new learning rate on --resume takes effect: optax's Adam keeps no lr in its state.
        self.opt_state = self._place(opt_state)
        self.train_key = key
        self.state = TrainState.from_meta(meta)

    # -- the loop ------------------------------------------------------------------------------
    def _monitor_elbo(self) -> dict[str, float]:
        """The per-epoch ELBO of the monitored split (validation, else held-out), fixed noise."""
        t = self.evaluator.elbo_terms(
            self.params, self.x_monitor, jax.random.PRNGKey(HELDOUT_NOISE_SEED), y=self.y_monitor
        )
        rec, kl = float(t["reconstruction"].mean()), float(t["kl"].mean())
        split = self.monitor
        return {
            f"{split}_elbo": -(rec + kl),
            f"{split}_reconstruction": rec,
            f"{split}_kl": kl,
            f"{split}_active_units": active_units(t["loc"]),
            **layer_records(split, t),
        }

    def _check_finite(self, values: np.ndarray) -> None:
        bad = ~np.isfinite(values[:, 0])
        if not bad.any():
            return
        step = self.state.step + int(np.argmax(bad)) + 1
        raise nonfinite_error(
            f"the loss became non-finite at step {step}",
            self.state.epoch + 1,
            self.state.records,
            self.checkpoint_path.exists(),
            self.run_dir,
            self.cfg.train.lr,
        )

    def _train_epoch(self, epoch: int, n_full: int, rest: int):
        """One epoch's optimizer steps: ``(params, opt_state, parts, seconds)``.

        ``parts`` holds ``(values, batch size)`` per compiled call, ``values`` a float64
        array of (loss, reconstruction, KL) per step; ``seconds`` is the training time,
        compilation excluded. In memory: the full batches in one compiled epoch, then the
        last smaller batch in one compiled step.
        """
        t, s = self.cfg.train, self.state
        n = n_full * t.batch_size + rest
        perm = np.random.default_rng([t.seed, epoch]).permutation(n)
        batches = jnp.asarray(perm[: n_full * t.batch_size].reshape(n_full, t.batch_size))
        if self.parallel is not None:  # the rest step (if any) runs whole on every device
            batches = self.parallel.shard_batches(batches)
        betas = jnp.asarray([beta_at(s.step + i, t) for i in range(n_full)], dtype=jnp.float32)
        epoch_key = jax.random.fold_in(self.train_key, epoch)
        params, opt_state = self.params, self.opt_state
        rest_idx = jnp.asarray(perm[n_full * t.batch_size :])
        rest_y = None if self.y_train is None else self.y_train[rest_idx]
        rest_beta = jnp.float32(beta_at(s.step + n_full, t))
        rest_key = jax.random.fold_in(epoch_key, n_full + 1)
        # Compile before the clock starts: compilation is not training time.
        epoch_fn = (
            self._program(
                "epoch", self._epoch_fn, params, opt_state, epoch_key, self.x_train, batches, betas, self.y_train
            )
            if n_full
            else None
        )
        step_fn = (
            self._program("step", self._step_fn, params, opt_state, rest_key, self.x_train[rest_idx], rest_beta, rest_y)
            if rest
            else None
        )
        started = time.perf_counter()
        parts = []
        if n_full:
            params, opt_state, values = epoch_fn(
                params, opt_state, epoch_key, self.x_train, batches, betas, self.y_train
            )
            parts.append((np.asarray(values, dtype=np.float64), t.batch_size))
        if rest:
            params, opt_state, values = step_fn(params, opt_state, rest_key, self.x_train[rest_idx], rest_beta, rest_y)
            parts.append((np.asarray(values, dtype=np.float64)[None], rest))
        seconds = time.perf_counter() - started  # np.asarray above waited for the device
        return params, opt_state, parts, seconds

    def fit(self, stop_after_steps: int | None = None) -> TrainState:
        """Train until ``train.epochs`` epochs are done.

        ``stop_after_steps`` stops (with a checkpoint) at the first epoch end at or after that
        many steps: this backend's unit of work is the compiled epoch.
        """
        t, s = self.cfg.train, self.state
        n = len(self.dataset.train)
        n_full, rest = divmod(n, t.batch_size)
        bar = progress_bar(t.epochs, "training", self.progress, unit="epoch")
        bar.update(s.epoch)
        with SignalCatcher() as signals:
            # A resumed run that had stopped early stays stopped (the choice is the records').
            while s.epoch < t.epochs and not should_stop(
                s.records, t.early_stopping_patience, t.early_stopping_min_delta
            ):
                params, opt_state, parts, seconds = self._train_epoch(s.epoch, n_full, rest)
                values = np.concatenate([v for v, _ in parts])
                self._check_finite(values)
                weights = np.concatenate([np.full(len(v), b) for v, b in parts])
                loss, rec, kl = (values[:, :3] * weights[:, None]).sum(0) / weights.sum()
                self.params, self.opt_state = params, opt_state
                s.step += len(values)
                record = {
                    "epoch": s.epoch + 1,
                    "step": s.step,
                    "loss": float(loss),
                    "reconstruction": float(rec),
                    "kl": float(kl),
                    "beta": beta_at(s.step - 1, t),
                    "lr": lr_at(s.epoch, t),
                    "seconds": seconds,
                    "images_per_s": n / seconds,
                    **({"grad_norm": float(values[:, 3].mean())} if self.track_norm else {}),
                    **self._monitor_elbo(),
                }
                s.records.append(record)
                s.epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.2f}", img_s=f"{n / seconds:.0f}")
                stop_early = should_stop(s.records, t.early_stopping_patience, t.early_stopping_min_delta)
                stop = (
                    stop_early
                    or signals.caught is not None
                    or (stop_after_steps is not None and s.step >= stop_after_steps)
                )
                if is_new_best(s.records, t.early_stopping_min_delta):
                    self.save_best()
                if stop or s.epoch % t.checkpoint_every == 0 or s.epoch == t.epochs:
                    self.save()
                if self.on_epoch is not None:
                    self.on_epoch(list(s.records))
                if signals.caught is not None:
                    bar.close()
                    raise Interrupted(interrupted_message(signals.caught, s.step, s.epoch, self.run_dir))
                if stop:
                    break
        bar.close()
        return s
