"""The run configuration: frozen, validated dataclasses that read and write TOML.

A spec file has three tables, ``[model]``, ``[data]`` and ``[train]``; every key is
optional and falls back to the defaults below. An optional top-level
``plugins = ["my_prior.py"]`` (before the tables) names plug-in files that register the
spec's custom components, relative to the spec file. ``ppvae fit`` writes the fully
resolved configuration to ``RUN/config.toml``, so ``ppvae fit RUN/config.toml``
reproduces the run.

Examples
--------
>>> from ppvae.spec.config import Config
>>> cfg = Config().with_overrides({"model.latent_dim": 2, "train.beta": 0.5})
>>> cfg.model.latent_dim, cfg.train.beta
(2, 0.5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from ppvae.errors import UsageError
from ppvae.inference.estimators import estimator, estimator_names, free_bits_refusal
from ppvae.model.hierarchy import plan_layers, training_refusal
from ppvae.inference.initialization import init_bias_refusal
from ppvae.spec.registry import BACKENDS

__all__ = [
    "ModelSpec",
    "DataSpec",
    "TrainSpec",
    "Config",
    "ELBO_NAMES",
    "BETA_SCHEDULES",
    "BINARIZE_MODES",
    "SCALE_MODES",
    "parse_override",
    "validate_device",
]

#: The estimators' names, read from the one table of estimators (ppvae.inference.estimators).
ELBO_NAMES = estimator_names()
BETA_SCHEDULES = ("constant", "linear", "cyclical")
#: Learning-rate schedules (ppvae.inference.schedules.lr_at), in the order ``--help`` lists them.
LR_SCHEDULES = ("constant", "exponential", "step", "cosine", "iwae")
#: Where training's per-epoch curves go besides metrics.jsonl (ppvae.runs.tensorboard).
LOG_TARGETS = ("none", "tensorboard")
INFERENCES = ("bottom_up", "ladder")
BINARIZE_MODES = ("auto", "dynamic", "static", "none")
SCALE_MODES = ("auto", "unit", "minmax", "none")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UsageError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choice(section: str, key: str, value: Any, choices) -> None:
    _check(
        value in choices,
        f"{section}.{key} = {value!r} is not valid; choose one of: {', '.join(choices)}",
    )


def _freeze_options(section: str, key: str, value: Any) -> dict:
    _check(isinstance(value, Mapping), f"{section}.{key} must be a table of settings, got {value!r}")
    for k in value:
        _check(isinstance(k, str), f"{section}.{key} keys must be strings, got {k!r}")
    # Round-trip through JSON so the options hold only plain, serializable values.
    try:
        return json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{section}.{key} holds a value that cannot be saved: {exc}") from None


@dataclass(frozen=True)
class ModelSpec:
    """What the VAE is: component names, their settings and the latent size.

    Parameters
    ----------
    prior, likelihood, encoder, decoder : str
        Registered component names (``ppvae.spec.registry`` lists them).
    guide : str
        The family of q(z|x) built from the encoder's outputs: ``"diagonal"`` (default, a
        diagonal Normal), ``"lowrank"``, ``"fullrank"`` or ``"iaf"`` (an inverse
        autoregressive flow), or a registered plug-in.
    latent_dim : int
        Size of the latent ``z``; must be positive.
    prior_options, likelihood_options, encoder_options, decoder_options, guide_options : dict
        Settings passed to each component (hidden sizes, a likelihood's scale mode, ...).
        Unknown settings are rejected with the list of valid ones when the model is built.
    conditional : bool
        A conditional VAE p(z) p(x|z,y) with q(z|x,y): the class label y (one-hot) is fed
        to the encoder and the decoder. Training needs labelled data; encoding, decoding,
        sampling and evaluation take labels (evaluation reports log p(x|y)).
    num_classes : int
        Number of classes C of a conditional model (labels are 0 .. C-1). ``0`` means
        "take it from the training labels" (largest label + 1) when fitting; the resolved
        value is what ``config.toml`` records.
    latent_layers : list of int
        Sizes of the stochastic layers above the first, ``[z2, z3, ...]``: a hierarchical VAE
        p(z_L) ... p(z_1|z_2) p(x|z_1) with sites ``"z1"`` ... ``"zL"``, ``latent_dim`` the
        size of ``z1`` and ``prior`` the distribution of the top layer (see
        :mod:`ppvae.model.hierarchy`). Empty (default): the one-layer VAE with site ``"z"``.
    latent_layer_options : dict
        The networks between consecutive layers: ``hidden`` (default ``[100, 100]``) and
        ``activation`` (default ``"tanh"``, as in the IWAE paper's two-layer model).
    inference : {"bottom_up", "ladder"}
        How the guide orders the layers: ``bottom_up`` is q(z_1|x) q(z_2|z_1) ... (the IWAE
        paper's two-layer model); ``ladder`` is top-down, q(z_L|x) q(z_{L-1}|z_L, x) ..., each
        layer's Normal the precision-weighted combination of a deterministic bottom-up pass
        and the model's own p(z_l|z_{l+1}) (the ladder VAE, Sønderby et al. 2016).
    """

    prior: str = "normal"
    likelihood: str = "bernoulli"
    encoder: str = "mlp"
    decoder: str = "mlp"
    latent_dim: int = 20
    prior_options: dict = field(default_factory=dict)
    likelihood_options: dict = field(default_factory=dict)
    encoder_options: dict = field(default_factory=dict)
    decoder_options: dict = field(default_factory=dict)
    guide: str = "diagonal"
    guide_options: dict = field(default_factory=dict)
    conditional: bool = False
    num_classes: int = 0
    latent_layers: tuple = ()
    latent_layer_options: dict = field(default_factory=dict)
    inference: str = "bottom_up"

    def __post_init__(self) -> None:
        for key in ("prior", "likelihood", "encoder", "decoder", "guide"):
            value = getattr(self, key)
            _check(isinstance(value, str) and value, f"model.{key} must be a component name, got {value!r}")
            object.__setattr__(self, key, value.lower())
        _check(
            _is_int(self.latent_dim) and self.latent_dim > 0,
            f"model.latent_dim must be a positive integer, got {self.latent_dim!r}; use e.g. --latent-dim 2",
        )
        for key in ("prior_options", "likelihood_options", "encoder_options", "decoder_options", "guide_options"):
            object.__setattr__(self, key, _freeze_options("model", key, getattr(self, key)))
        _check(isinstance(self.conditional, bool), f"model.conditional must be true or false, got {self.conditional!r}")
        _check(
            _is_int(self.num_classes) and self.num_classes >= 0,
            f"model.num_classes must be a non-negative integer (0: take it from the labels), got {self.num_classes!r}",
        )
        _check(
            self.conditional or self.num_classes == 0,
            f"model.num_classes = {self.num_classes} is only used by a conditional model; "
            "set model.conditional = true, or drop num_classes",
        )
        layers = self.latent_layers
        _check(
            isinstance(layers, (list, tuple)) and all(_is_int(d) and d > 0 for d in layers),
            f"model.latent_layers must be a list of positive layer sizes (z2, z3, ...), got {layers!r}; "
            "use e.g. --set model.latent_layers=[50]",
        )
        object.__setattr__(self, "latent_layers", tuple(int(d) for d in layers))
        object.__setattr__(
            self, "latent_layer_options", _freeze_options("model", "latent_layer_options", self.latent_layer_options)
        )
        _choice("model", "inference", self.inference, INFERENCES)

    def options(self, kind: str) -> dict:
        """Return the settings table for component ``kind`` (e.g. ``"encoder"``)."""
        return dict(getattr(self, f"{kind}_options"))


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is prepared.

    Parameters
    ----------
    source : str
        ``"embedded"`` (MNIST test digits shipped with ppvae, no network), ``"mnist"`` or
        ``"fashion-mnist"`` (downloaded once into the cache, checksums verified), a folder
        holding the standard MNIST-format ``*-idx*-ubyte.gz`` files, or a ``.npy``, ``.npz``
        or ``.csv`` file.
    scale : {"auto", "unit", "minmax", "none"}
        ``"unit"`` divides 0-255 grey levels by 255; ``"minmax"`` maps each feature to
        [0, 1] using the training split; ``"auto"`` means ``"unit"`` for 8-bit images and
        ``"none"`` otherwise.
    binarize : {"auto", "dynamic", "static", "none"}
        ``"dynamic"`` draws a fresh Bernoulli(pixel) for every training minibatch;
        ``"static"`` draws once; held-out data is always binarized once with a fixed
        seed (``split_seed + 1``) unless this is ``"none"``. ``"auto"`` is ``"dynamic"``
        for a Bernoulli likelihood on [0, 1] data and ``"none"`` otherwise.
    standardize : bool
        Shift and scale every feature to mean 0, sd 1 (statistics of the training split),
        for Gaussian likelihoods.
    min_sd : float
        With ``standardize``, divide by at least this (in the scaled units, e.g. 0.1 of
        the grey-level range): a feature that is almost constant in training has a tiny
        sd, and one unusual held-out value would otherwise become hundreds of sds and
        dominate every mean. 0 (default) divides by the sd as it is.
    heldout_fraction : float
        Share of the data held out for evaluation, in (0, 1). Datasets with an official
        test set (MNIST with all four files) use it instead.
    split_seed : int
        Seed of the train/held-out permutation (``numpy.random.default_rng(split_seed)``).
    validation_fraction : float
        Share of the *training* rows set aside as a validation split, in [0, 1) (0: none),
        drawn with ``default_rng([split_seed, 2])``. Training then reports its per-epoch
        ELBO on the validation rows and never reads the held-out split, which is left for
        the final evaluation; the held-out split is the same with or without it.
    cache_dir : str or None
        Where downloads are kept; default ``$PPVAE_CACHE`` or the user cache folder.
    mirror : str or None
        Base URL to download the standard files from instead of the official mirror.
    stream : {"auto", true, false}
        Read a ``.npy`` source by rows during training instead of holding it in memory
        (data larger than memory). ``"auto"`` streams when the prepared float32 training
        split would exceed ``memory_budget_mb``; ``true`` needs a ``.npy`` file.
    memory_budget_mb : float
        Size in MiB above which ``stream = "auto"`` streams (default 1024).
    block_rows : int
        When streaming, each epoch shuffles blocks of this many contiguous rows, and
        rows within windows of a few blocks, so reads stay sequential.
    """

    source: str = "embedded"
    scale: str = "auto"
    binarize: str = "auto"
    standardize: bool = False
    min_sd: float = 0.0
    heldout_fraction: float = 0.2
    split_seed: int = 0
    validation_fraction: float = 0.0
    cache_dir: str | None = None
    mirror: str | None = None
    stream: str | bool = "auto"
    memory_budget_mb: float = 1024.0
    block_rows: int = 4096

    def __post_init__(self) -> None:
        _check(
            isinstance(self.source, str) and self.source, f"data.source must be a name or a path, got {self.source!r}"
        )
        _check(
            self.stream in ("auto", True, False) and (self.stream == "auto" or isinstance(self.stream, bool)),
            f'data.stream = {self.stream!r} is not valid; choose one of: "auto", true, false',
        )
        _check(
            _is_number(self.memory_budget_mb) and self.memory_budget_mb > 0,
            f"data.memory_budget_mb must be a positive number of MiB, got {self.memory_budget_mb!r}",
        )
        object.__setattr__(self, "memory_budget_mb", float(self.memory_budget_mb))
        _check(
            _is_int(self.block_rows) and self.block_rows > 0,
            f"data.block_rows must be a positive integer, got {self.block_rows!r}",
        )
        _choice("data", "scale", self.scale, SCALE_MODES)
        _choice("data", "binarize", self.binarize, BINARIZE_MODES)
        _check(isinstance(self.standardize, bool), f"data.standardize must be true or false, got {self.standardize!r}")
        _check(
            _is_number(self.min_sd) and math.isfinite(self.min_sd) and self.min_sd >= 0,
            f"data.min_sd must be a non-negative number, got {self.min_sd!r}",
        )
        object.__setattr__(self, "min_sd", float(self.min_sd))
        _check(
            _is_number(self.heldout_fraction) and 0.0 < self.heldout_fraction < 1.0,
            f"data.heldout_fraction must be between 0 and 1 (exclusive), got {self.heldout_fraction!r}",
        )
        object.__setattr__(self, "heldout_fraction", float(self.heldout_fraction))
        _check(
            _is_number(self.validation_fraction) and 0.0 <= self.validation_fraction < 1.0,
            f"data.validation_fraction must be at least 0 and below 1 (a share of the training rows), "
            f"got {self.validation_fraction!r}",
        )
        object.__setattr__(self, "validation_fraction", float(self.validation_fraction))
        _check(
            _is_int(self.split_seed) and self.split_seed >= 0,
            f"data.split_seed must be a non-negative integer, got {self.split_seed!r}",
        )
        _check(
            not (self.standardize and self.binarize in ("dynamic", "static")),
            "data.standardize and data.binarize cannot both be on: binarized pixels are 0/1; "
            'set binarize = "none" for a Gaussian likelihood on standardized data',
        )


@dataclass(frozen=True)
class TrainSpec:
    """How the VAE is trained.

    Parameters
    ----------
    backend : str
        Inference backend: ``"pyro"``.
    elbo : {"meanfield", "trace", "iwae", "dreg"}
        ``meanfield``: ELBO with the analytic KL where one exists (sampled otherwise);
        ``trace``: fully sampled ELBO; ``iwae``: the importance-weighted bound with
        ``num_particles`` samples per datapoint; ``dreg``: the same bound with the
        doubly-reparameterized gradient (lower-variance gradients for the encoder; needs a
        Gaussian guide).
    num_particles : int
        Samples of z per datapoint (K for ``iwae`` and ``dreg``, averaged for the ELBOs).
    epochs, batch_size : int
        Passes over the training split, and minibatch size.
    lr : float
        Adam learning rate (the peak of a schedule).
    lr_schedule : {"constant", "exponential", "step", "cosine", "iwae"}
        The learning rate by epoch (:func:`ppvae.inference.schedules.lr_at`): constant;
        ``lr_decay`` every ``lr_step_epochs``, smoothly (exponential) or in steps; a cosine
        from ``lr`` to ``lr_min`` after ``lr_warmup_epochs`` of linear warm-up; or the IWAE
        paper's 3^i epochs at lr·10^(-i/7). Recorded per epoch as ``lr`` in metrics.jsonl.
    lr_decay : float
        Factor in (0, 1] applied every ``lr_step_epochs`` (exponential and step).
    lr_step_epochs : int
        Epochs per ``lr_decay`` (exponential and step).
    lr_warmup_epochs : int
        Epochs of linear warm-up before the cosine (0: none).
    lr_min : float
        Where the cosine ends (0 <= lr_min < lr).
    init_decoder_bias : bool
        Start the decoder's output bias at the training data's log-odds (Bernoulli), so the
        untrained decoder draws the average image (:mod:`ppvae.inference.initialization`):
        the recipe that keeps a VampPrior with tanh networks from collapsing.
    clip_grad_norm : float
        Rescale each step's gradient to at most this global L2 norm before the Adam update
        (0: no clipping). Keeps a rare huge gradient (deep tanh networks, K >= 10) from
        throwing the weights off.
    free_bits : float
        λ in nats per latent dimension (0: off): the ELBO's KL term becomes
        ``sum_d max(λ, batch mean of KL_d)`` (Kingma et al. 2016), so no dimension is pushed
        onto the prior before it has learned something. For the ELBO estimators (meanfield,
        trace), a diagonal guide and a prior that factorizes over the dimensions; the
        reported ``kl`` stays the true KL.
    early_stopping_patience : int
        Stop when this many epochs in a row have not raised the validation ELBO by more than
        ``early_stopping_min_delta`` (0: train every epoch). Needs ``data.validation_fraction``.
        With a validation split the best epoch's weights are kept beside the last ones
        (``checkpoint-best.safetensors``) whether or not training stops early.
    early_stopping_min_delta : float
        Nats per datapoint an epoch must gain over the best so far to count as better.
    beta : float
        Weight of the KL term (> 0); ``1`` is the plain ELBO. Applied through
        ``poutine.scale`` around ``"z"`` in both the model and the guide.
    beta_schedule : {"constant", "linear", "cyclical"}
        ``linear`` ramps β from ``beta / warmup_steps`` to ``beta`` over ``warmup_steps``;
        ``cyclical`` repeats that ramp over the first half of every ``cycle_steps``.
    warmup_steps, cycle_steps : int
        Lengths for the schedules above.
    seed : int
        Seed of every random draw in training (initial weights, batches, noise).
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    log_every : int
        Steps between progress updates; the only points where training waits for the device.
    eval_num_samples : int
        K of the importance-weighted log p(x) estimate computed at the end of ``fit``.
    log : {"none", "tensorboard"}
        ``tensorboard`` also writes each epoch's record as TensorBoard scalars to
        ``RUN/tensorboard/`` (the optional extra ``ppvae[tensorboard]``), with the mean
        gradient norm of the epoch's steps (``grad_norm``, also recorded when clipping).
    checkpoint_every : int
        Epochs between checkpoints (the last epoch is always saved).
    num_devices : int
        Data-parallel training over this many JAX devices (numpyro backend): params
        replicated, each step's batch split over the devices. ``batch_size`` is then the
        global batch and must divide by ``num_devices``. Not part of the model's fingerprint:
        a run may resume on another device count.
    """

    backend: str = "pyro"
    elbo: str = "meanfield"
    num_particles: int = 1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_decay: float = 0.5
    lr_step_epochs: int = 10
    lr_warmup_epochs: int = 0
    lr_min: float = 0.0
    clip_grad_norm: float = 0.0
    free_bits: float = 0.0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    beta: float = 1.0
    beta_schedule: str = "constant"
    warmup_steps: int = 1000
    cycle_steps: int = 2000
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    eval_num_samples: int = 1000
    checkpoint_every: int = 1
    num_devices: int = 1
    log: str = "none"
    init_decoder_bias: bool = False

    def __post_init__(self) -> None:
        _check(isinstance(self.backend, str) and self.backend, f"train.backend must be a name, got {self.backend!r}")
        object.__setattr__(self, "backend", self.backend.lower())
        _choice("train", "elbo", self.elbo, ELBO_NAMES)
        _choice("train", "beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("train", "log", self.log, LOG_TARGETS)
        for key in (
            "num_particles",
            "epochs",
            "batch_size",
            "warmup_steps",
            "cycle_steps",
            "log_every",
            "eval_num_samples",
            "checkpoint_every",
            "num_devices",
            "lr_step_epochs",
        ):
            value = getattr(self, key)
            _check(_is_int(value) and value > 0, f"train.{key} must be a positive integer, got {value!r}")
        _check(_is_int(self.seed) and self.seed >= 0, f"train.seed must be a non-negative integer, got {self.seed!r}")
        _check(
            _is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0,
            f"train.lr must be a positive number, got {self.lr!r}",
        )
        _check(
            _is_number(self.beta) and math.isfinite(self.beta) and self.beta > 0,
            f"beta must be > 0 (got {self.beta!r}): β weights the KL and β = 0 drops the prior; "
            "for KL annealing use --beta-schedule linear, which starts at a small positive β",
        )
        _check(
            _is_int(self.lr_warmup_epochs) and self.lr_warmup_epochs >= 0,
            f"train.lr_warmup_epochs must be a non-negative integer, got {self.lr_warmup_epochs!r}",
        )
        _check(
            _is_number(self.lr_decay) and 0 < self.lr_decay <= 1,
            f"train.lr_decay must be in (0, 1] (the factor applied every lr_step_epochs), got {self.lr_decay!r}",
        )
        _check(
            _is_number(self.lr_min) and 0 <= self.lr_min < self.lr,
            f"train.lr_min must be at least 0 and below train.lr ({self.lr:g}), got {self.lr_min!r}",
        )
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "lr_decay", float(self.lr_decay))
        object.__setattr__(self, "lr_min", float(self.lr_min))
        _check(
            _is_number(self.clip_grad_norm) and math.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0,
            f"train.clip_grad_norm must be a non-negative number (0: no clipping), got {self.clip_grad_norm!r}",
        )
        object.__setattr__(self, "clip_grad_norm", float(self.clip_grad_norm))
        _check(
            isinstance(self.init_decoder_bias, bool),
            f"train.init_decoder_bias must be true or false, got {self.init_decoder_bias!r}",
        )
        _check(
            _is_number(self.free_bits) and math.isfinite(self.free_bits) and self.free_bits >= 0,
            f"train.free_bits must be a non-negative number (nats per latent dimension; 0: off), got {self.free_bits!r}",
        )
        object.__setattr__(self, "free_bits", float(self.free_bits))
        if self.free_bits:
            _check(not free_bits_refusal(self.elbo), free_bits_refusal(self.elbo) or "")
        _check(
            _is_int(self.early_stopping_patience) and self.early_stopping_patience >= 0,
            "train.early_stopping_patience must be a non-negative integer (epochs; 0: no early stopping), "
            f"got {self.early_stopping_patience!r}",
        )
        _check(
            _is_number(self.early_stopping_min_delta)
            and math.isfinite(self.early_stopping_min_delta)
            and self.early_stopping_min_delta >= 0,
            f"train.early_stopping_min_delta must be a non-negative number (nats), got {self.early_stopping_min_delta!r}",
        )
        object.__setattr__(self, "early_stopping_min_delta", float(self.early_stopping_min_delta))
        object.__setattr__(self, "beta", float(self.beta))
        validate_device(self.device, "train.device")
        _check(
            self.num_devices == 1 or self.backend == "numpyro",
            f"train.num_devices = {self.num_devices} splits batches over JAX devices and needs "
            f'train.backend = "numpyro" (got {self.backend!r}); for the pyro backend use '
            "ppvae fit --num-processes N",
        )


_SECTIONS = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec}


def _section_from_mapping(name: str, cls, table: Any):
    _check(isinstance(table, Mapping), f"[{name}] must be a table")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - valid)
    _check(
        not unknown,
        f"unknown key(s) in [{name}]: {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}",
    )
    try:
        return cls(**table)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise UsageError(f"[{name}]: {exc}") from None


@dataclass(frozen=True)
class Config:
    """A whole run configuration: ``model``, ``data`` and ``train``.

    Examples
    --------
    >>> cfg = Config.from_dict({"model": {"latent_dim": 2}})
    >>> Config.from_toml_string(cfg.to_toml_string()) == cfg
    True
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    #: Plug-in files (``.py``) that register the spec's custom components; the top-level
    #: ``plugins = [...]`` of a spec, relative to the spec file there, absolute once resolved.
    plugins: tuple = ()

    def __post_init__(self) -> None:
        value = self.plugins
        _check(
            isinstance(value, (list, tuple)) and all(isinstance(p, str) and p for p in value),
            f'plugins must be a list of .py file paths, e.g. plugins = ["my_prior.py"], got {value!r}',
        )
        object.__setattr__(self, "plugins", tuple(dict.fromkeys(value)))
        # DReG evaluates log q at stopped guide parameters, which a flow cannot offer (its
        # parameters live inside networks): say so before any run folder is written.
        _check(
            not (estimator(self.train.elbo).gaussian_guide_only and getattr(self.model, "guide", None) == "iaf"),
            f'train.elbo = "{self.train.elbo}" needs a Gaussian guide (model.guide = diagonal, lowrank or '
            'fullrank), not model.guide = "iaf"; train the flow with --elbo iwae',
        )
        guide = getattr(self.model, "guide", "diagonal")
        _check(
            not self.train.free_bits or guide == "diagonal",
            f'train.free_bits floors the KL of each latent dimension, which needs model.guide = "diagonal" '
            f'(got "{guide}"): its dimensions are independent given x',
        )
        # Epochs are chosen on the validation split only, never on the held-out one.
        _check(
            not self.train.early_stopping_patience or self.data.validation_fraction > 0,
            "train.early_stopping_patience needs a validation split to watch: set data.validation_fraction "
            "(e.g. --validation-fraction 0.1); the held-out split is kept for the final figures",
        )
        # A hierarchical VAE's combinations, before any run folder is written.
        plan_layers(self.model)
        refusal = training_refusal(self.model, self.train.elbo, self.train.backend)
        _check(refusal is None, refusal or "")
        if self.train.init_decoder_bias:
            refusal = init_bias_refusal(self.model.likelihood, self.model.decoder, self.data.stream is True)
            _check(refusal is None, refusal or "")
        # The estimators table says which backends implement each estimator.
        # (An unknown backend name is left to the registry, whose message lists the valid ones.)
        implemented = estimator(self.train.elbo).backends
        _check(
            self.train.backend not in BACKENDS or self.train.backend in implemented,
            f'train.elbo = "{self.train.elbo}" is implemented for backend {", ".join(implemented)} only, '
            f'not train.backend = "{self.train.backend}"; choose --backend {implemented[0]} or another --elbo',
        )

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, tables: Mapping[str, Any]) -> "Config":
        """Build from nested tables ``{"model": {...}, "data": {...}, "train": {...}}``."""
        _check(isinstance(tables, Mapping), "a spec must be a table with [model], [data] and [train]")
        unknown = sorted(set(tables) - set(_SECTIONS) - {"plugins"})
        _check(
            not unknown,
            f"unknown table(s) {', '.join(unknown)} in the spec; valid tables: model, data, train "
            "(and the top-level key plugins)",
        )
        return cls(
            **{name: _section_from_mapping(name, sec, tables.get(name, {})) for name, sec in _SECTIONS.items()},
            plugins=tables.get("plugins", ()),
        )

    @classmethod
    def from_toml_string(cls, text: str, origin: str = "spec") -> "Config":
        """Parse a TOML spec given as a string."""
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{origin} is not valid TOML ({exc}); fix the file and try again") from None
        return cls.from_dict(tables)

    @classmethod
    def from_toml(cls, path: str | Path) -> "Config":
        """Read a TOML spec file (for example ``RUN/config.toml`` or ``models/NAME.toml``)."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"spec file {str(path)!r} does not exist; check the path")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read spec file {str(path)!r}: {exc}") from None
        cfg = cls.from_toml_string(text, origin=f"spec file {str(path)!r}")
        return cfg._resolve_relative_source(path.parent)._resolve_plugin_paths(path.parent)

    def _resolve_plugin_paths(self, base: Path) -> "Config":
        """Plug-in paths in a spec are relative to the spec file; make them absolute."""
        paths = tuple(str((base / Path(p).expanduser()).resolve()) for p in self.plugins)
        return dataclasses.replace(self, plugins=paths) if paths != self.plugins else self

    def _resolve_relative_source(self, base: Path) -> "Config":
        """A data path in a spec is relative to the spec file, like a plug-in path."""
        src = self.data.source
        if src in ("embedded", "mnist", "fashion-mnist") or Path(src).is_absolute():
            return self
        candidate = base / src
        if candidate.exists():
            return dataclasses.replace(self, data=dataclasses.replace(self.data, source=str(candidate.resolve())))
        return self

    # -- transformation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested plain tables, with ``None`` values left out (TOML has no null)."""
        # Top-level keys first: TOML puts every key after a [table] header into that table.
        out: dict = {"plugins": list(self.plugins)} if self.plugins else {}
        for name in _SECTIONS:
            table = dataclasses.asdict(getattr(self, name))
            out[name] = {k: v for k, v in table.items() if v is not None}
        return out

    def to_toml_string(self) -> str:
        """Serialize as TOML."""
        return tomli_w.dumps(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        """Return a copy with dotted keys replaced, e.g. ``{"train.beta": 0.5}``.

        A key may also name an option inside a component table, as in
        ``"model.encoder_options.hidden"``.
        """
        tables = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            _check(
                len(parts) >= 2 and parts[0] in _SECTIONS,
                f"--set key {key!r} must look like section.key with section one of model, data, train "
                "(e.g. train.lr=3e-4 or model.encoder_options.hidden=[512,256])",
            )
            section = parts[0]
            valid = {f.name for f in fields(_SECTIONS[section])}
            _check(
                parts[1] in valid,
                f"unknown key {parts[1]!r} in [{section}] (from --set {key}); valid keys: {', '.join(sorted(valid))}",
            )
            node = tables[section]
            if len(parts) > 2:
                _check(parts[1].endswith("_options"), f"--set {key}: only the *_options tables have sub-keys")
                node = node.setdefault(parts[1], {})
                for part in parts[2:-1]:
                    node = node.setdefault(part, {})
            node[parts[-1]] = value
        return Config.from_dict(tables)

    def fingerprint(self) -> str:
        """A short hash of what fixes the parameter shapes (model spec and data source).

        A checkpoint stores it; loading into a different spec is refused with a clear message.
        """
        model = dataclasses.asdict(self.model)
        if not self.model.conditional:
            # Unconditional specs hash as they did before these keys existed, so older
            # run folders keep loading.
            model.pop("conditional")
            model.pop("num_classes")
        if self.model.guide == "diagonal" and not self.model.guide_options:
            # Likewise for the default guide family (it has no settings).
            model.pop("guide")
            model.pop("guide_options")
        if not self.model.latent_layers and not self.model.latent_layer_options and self.model.inference == "bottom_up":
            # And for the one-layer VAE, which has no layers above z.
            model.pop("latent_layers")
            model.pop("latent_layer_options")
            model.pop("inference")
        payload = json.dumps(model, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def validate_device(device: Any, what: str = "--device") -> None:
    """Accept ``auto``, ``cpu``, ``cuda`` and ``cuda:N``; anything else is a UsageError."""
    _check(
        isinstance(device, str) and bool(_DEVICE_RE.match(device)),
        f"{what}{' ' if what.startswith('--') else ' = '}{device!r} is not valid; use auto, cpu, cuda or cuda:N",
    )


def format_overrides(key: str, value: Any) -> list[str]:
    """The ``--set KEY=VALUE`` texts that :func:`parse_override` reads back as ``key`` = ``value``.

    A table becomes one text per entry (dotted keys), so every text stays one line.

    Examples
    --------
    >>> format_overrides("train.lr", 0.0003)
    ['train.lr=0.0003']
    >>> format_overrides("model.encoder_options", {"hidden": [512, 256]})
    ['model.encoder_options.hidden=[ 512, 256, ]']
    >>> parse_override(format_overrides("data.source", "my digits.npy")[0])
    ('data.source', 'my digits.npy')
    """
    if isinstance(value, Mapping):
        return [text for k, v in value.items() for text in format_overrides(f"{key}.{k}", v)]
    written = tomli_w.dumps({"v": value}).partition("=")[2].strip()
    # tomli_w writes an array one item per line; TOML reads it back the same on one line
    # (strings never hold a raw line break: tomli_w escapes it).
    return [f"{key}={' '.join(part.strip() for part in written.splitlines())}"]


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set KEY=VALUE``; the value is read as TOML, else kept as a string.

    Examples
    --------
    >>> parse_override("train.lr=3e-4")
    ('train.lr', 0.0003)
    >>> parse_override("model.encoder_options.hidden=[512, 256]")
    ('model.encoder_options.hidden', [512, 256])
    >>> parse_override("data.source=digits.npy")
    ('data.source', 'digits.npy')
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    _check(bool(sep) and bool(key), f"--set expects KEY=VALUE (e.g. train.lr=3e-4), got {text!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
