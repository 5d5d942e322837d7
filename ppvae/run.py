"""A trained run: open a run folder and use the VAE in it.

:func:`load` opens a folder written by :func:`ppvae.fit`; :class:`Run` is what both return:
the run's config, metrics and summary, and the trained VAE with numpy in and out (encode,
decode, reconstruct, sample, evaluate, score). The backend is imported only when the VAE is
first used.

Examples
--------
>>> import ppvae
>>> run = ppvae.load("runs/demo")                                  # doctest: +SKIP
>>> loc, scale = run.encode(run.heldout()[:10])                    # doctest: +SKIP
>>> run.evaluate(num_samples=100)["heldout_log_px"]                # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ppvae.data import Dataset, load_dataset, load_source
from ppvae.errors import DataError, UsageError
from ppvae.model.conditioning import sample_labels
from ppvae.runs.folder import RunFolder
from ppvae.spec import registry
from ppvae.spec.config import Config
from ppvae.spec.plugins import with_plugins

__all__ = ["load", "Run"]


def load(path: str | Path, device: str = "auto", checkpoint: str | None = None) -> "Run":
    """Open a run folder written by :func:`fit`.

    Parameters
    ----------
    path : path-like
        The run folder.
    device : str
        Where the networks run: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    checkpoint : {"best", "last"}, optional
        The weights to use: the epoch with the best validation ELBO, or where training
        stopped. Default: the best checkpoint when the run has one (it was trained with a
        validation split), else the last.

    Examples
    --------
    >>> run = ppvae.load("runs/demo")                    # doctest: +SKIP
    >>> x = run.sample(8)                                # doctest: +SKIP
    >>> last = ppvae.load("runs/demo", checkpoint="last")  # doctest: +SKIP
    """
    folder = RunFolder(path)
    folder.check_exists()
    return Run(folder.path, device=device, checkpoint=checkpoint)


class Run:
    """A trained run: its config, metrics and summary, and the VAE to use.

    Inputs and outputs are numpy arrays in the model's data space (prepared like the
    training data: scaled, standardized or binarized as the run's ``data.json`` says).
    Use :meth:`prepare` to bring raw data there.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cfg: Config | None = None,
        trained=None,
        dataset: Dataset | None = None,
        device: str = "auto",
        data_info: dict | None = None,
        checkpoint: str | None = None,
    ):
        self.folder = RunFolder(path)
        self.path = self.folder.path
        self.config = cfg or with_plugins(self.folder.read_config(), origin=f"{self.folder.path / 'config.toml'}")
        # Given by fit on a process other than rank 0, whose machine may not see the run folder.
        self.data_info = self.folder.read_data_info() if data_info is None else data_info
        self.summary = None if data_info is not None else self.folder.read_summary()
        self._trained = trained
        #: Where the VAE's weights come from: ``"best"`` (the epoch with the best validation
        #: ELBO) or ``"last"`` (where training stopped); a model given in memory is the last.
        self.checkpoint = (checkpoint or "last") if trained is not None else self.folder.choose_checkpoint(checkpoint)
        self._dataset = dataset
        self._device = device

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, backend={self.config.train.backend!r}, checkpoint={self.checkpoint!r})"

    # -- the trained model ---------------------------------------------------------------------
    @property
    def trained(self):
        """The backend's trained-model object (loaded lazily from the checkpoint)."""
        if self._trained is None:
            backend = registry.load_backend(self.config.train.backend)
            self._trained = backend.load(
                self.path, self.config, tuple(self.data_info["event_shape"]), device=self._device, which=self.checkpoint
            )
        return self._trained

    @property
    def model(self) -> Callable:
        """The Pyro model callable ``model(x, beta=None, *, y=None)`` (sites ``"z"``, ``"x"``, plate ``"data"``).

        A conditional run's model needs the integer labels ``y``.
        """
        return self.trained.model

    @property
    def guide(self) -> Callable:
        """The Pyro guide callable ``guide(x, beta=None, *, y=None)``: the amortized encoder q(z|x)."""
        return self.trained.guide

    @property
    def num_classes(self) -> int:
        """C of a conditional run (``model.conditional = true``), 0 for an unconditional one."""
        m = self.config.model
        return m.num_classes if m.conditional else 0

    @property
    def event_shape(self) -> tuple:
        return tuple(self.data_info["event_shape"])

    def metrics(self) -> list[dict]:
        """The per-epoch records of ``metrics.jsonl``."""
        return self.folder.read_metrics()

    # -- data ----------------------------------------------------------------------------------
    def dataset(self) -> Dataset:
        """The run's own prepared dataset (re-read from its source)."""
        if self._dataset is None:
            self._dataset = load_dataset(
                self.config.data,
                self.config.model.likelihood,
                registry.likelihood_support(self.config.model.likelihood, self.config.train.backend),
            )
        return self._dataset

    def heldout(self) -> np.ndarray:
        """The run's held-out split, prepared.

        For a streamed run (``data.stream``) a :class:`~ppvae.data.streaming.StreamingRows`
        read on demand: slice it (``run.heldout()[:100]``) or iterate ``.chunks()``.
        """
        return self.dataset().heldout

    def load_data(self, source: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Data for evaluate/encode/reconstruct: the held-out split, or ``source`` prepared like it."""
        if source is None:
            ds = self.dataset()
            return ds.heldout, ds.heldout_labels
        return load_source(source, self.config.data, self.data_info["transform"])

    def _check(self, x: np.ndarray, what: str = "x") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2 and len(self.event_shape) > 1 and x.shape[1] == int(np.prod(self.event_shape)):
            x = x.reshape(len(x), *self.event_shape)
        if tuple(x.shape[1:]) != self.event_shape:
            raise UsageError(
                f"{what} has datapoints of shape {tuple(x.shape[1:])}, but this run expects {self.event_shape}"
            )
        return x

    # -- uses ------------------------------------------------------------------------------------
    # A conditional run (``num_classes > 0``) needs ``labels``, one integer per datapoint
    # (an int means the same class for all); an unconditional run refuses them.
    def encode(self, x: np.ndarray, labels: np.ndarray | int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior loc and scale of q(z|x) (q(z|x,y) given ``labels`` when conditional): the codes."""
        return self.trained.encode(self._check(x), y=labels)

    def encode_layers(
        self, x: np.ndarray, labels: np.ndarray | int | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every latent layer's posterior (loc, scale), z_1 first: one pair, or one per layer of a hierarchical VAE.

        Each layer above z_1 is q(z_{l+1} | z_l) taken at the loc of the layer below.
        """
        return self.trained.encode_layers(self._check(x), y=labels)

    def decode(self, z: np.ndarray, labels: np.ndarray | int | None = None) -> np.ndarray:
        """Mean of p(x|z) (p(x|z,y) given ``labels`` when conditional) for latents ``(n, latent_dim)``."""
        z = np.asarray(z, dtype=np.float32)
        dim = self.config.model.latent_dim
        if z.ndim != 2 or z.shape[1] != dim:
            raise UsageError(f"latents must have shape (n, {dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise UsageError("latents contain NaN or inf; give finite values")
        return self.trained.decode(z, y=labels)

    def reconstruct(self, x: np.ndarray, labels: np.ndarray | int | None = None) -> np.ndarray:
        """Encode then decode (posterior mean): compression and recovery (``labels``: as :meth:`encode`)."""
        return self.trained.reconstruct(self._check(x), y=labels)

    def sample(self, n: int, seed: int = 0, labels: np.ndarray | int | None = None) -> np.ndarray:
        """``n`` new datapoints: means of p(x|z) for z drawn from the prior.

        For a conditional run, ``labels`` picks the class of every sample (an int) or of each
        (``n`` ints); without it the classes take turns: 0, 1, ..., C-1, 0, 1, ...

        Examples
        --------
        >>> threes = run.sample(16, labels=3)                              # doctest: +SKIP
        """
        if not (isinstance(n, int) and n > 0):
            raise UsageError(f"number of samples must be a positive integer, got {n!r}")
        if self.num_classes:
            labels = sample_labels(self.num_classes, n, labels)
        return self.trained.sample(n, seed=seed, y=labels)

    def evaluate(
        self, x: np.ndarray | None = None, num_samples: int = 1000, seed: int = 0, labels: np.ndarray | None = None
    ) -> dict:
        """Held-out ELBO, reconstruction, KL, IWAE log p(x) with K = ``num_samples``, active units.

        Where labels exist (the held-out split's, or ``labels`` for ``x``) and the training
        split has labels too, also ``linear_probe_accuracy``: a logistic regression trained on
        the latent means of the training split and scored on the evaluated points, with
        ``linear_probe`` saying which points each side used.

        Parameters
        ----------
        x : numpy.ndarray, optional
            Prepared data; defaults to the run's held-out split (and its labels).
        num_samples : int
            K of the importance-weighted bound (chunked: memory does not grow with K).
        seed : int
            Seed of the importance samples.
        labels : numpy.ndarray, optional
            One integer label per row of ``x``, for the linear probe. A conditional run
            needs them (the numbers are then of log p(x|y)).
        """
        if not (isinstance(num_samples, int) and num_samples > 0):
            raise UsageError(f"--num-samples must be a positive integer, got {num_samples!r}")
        if x is None and self.dataset().streaming:
            # A streamed held-out split is evaluated chunk by chunk (it has no labels to probe).
            from ppvae.inference.chunked_evaluation import evaluate_in_chunks

            return evaluate_in_chunks(
                self.trained,
                self.heldout(),
                num_samples=num_samples,
                seed=seed,
                is_image=bool(self.data_info.get("is_image")),
            )
        if x is None:
            x, labels, scored_on = self.heldout(), self.dataset().heldout_labels, "held-out split"
        else:
            x, scored_on = self._check(x), "the evaluated data"
        ev = self.trained.evaluate(
            x,
            num_samples=num_samples,
            seed=seed,
            is_image=bool(self.data_info.get("is_image")),
            y=labels if self.num_classes else None,
        )
        ev.update(self._linear_probe(x, labels, scored_on))
        return ev

    def _linear_probe(self, x: np.ndarray, labels: np.ndarray | None, scored_on: str) -> dict:
        """``linear_probe_accuracy`` and what it used, or nothing where labels are missing."""
        from ppvae.data.arrays import check_labels
        from ppvae.inference.metrics import PROBE_MAX_TRAIN, linear_probe_accuracy

        if labels is None:
            return {}
        labels = check_labels(labels, len(x), "the labels")
        if self.dataset().train_labels is None:
            return {}
        train_loc, train_labels = self.training_codes(PROBE_MAX_TRAIN)
        cond = self.num_classes > 0  # a conditional encoder is given each point's own label
        probe = linear_probe_accuracy(train_loc, train_labels, self.encode(x, labels if cond else None)[0], labels)
        if probe is None:
            return {}
        return {
            "linear_probe_accuracy": probe["accuracy"],
            "linear_probe": {
                "trained_on": f"training split, latent means of {probe['num_train']} points",
                "scored_on": f"{scored_on}, {probe['num_test']} points",
                "num_classes": probe["num_classes"],
            },
        }

    def training_codes(self, max_points: int = 10_000) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior means of the training split (a seeded subset of ``max_points`` beyond), and its labels.

        Where training binarized every minibatch afresh, the split is binarized once with a
        fixed seed, as the model saw it (and as the held-out split is).
        """
        ds = self.dataset()
        train, train_labels = ds.train, ds.train_labels
        if len(train) > max_points:
            keep = np.sort(np.random.default_rng(0).choice(len(train), max_points, replace=False))
            train, train_labels = train[keep], None if train_labels is None else train_labels[keep]
        train = train[:]  # a streamed split becomes rows here: at most max_points of them
        if ds.binarize == "dynamic":
            train = (np.random.default_rng(1).random(train.shape) < train).astype(np.float32)
        return self.encode(train, train_labels if self.num_classes else None)[0], train_labels

    def score(
        self,
        x: np.ndarray | None = None,
        num_samples: int = 1000,
        seed: int = 0,
        labels: np.ndarray | None = None,
        latent_density: bool = False,
    ) -> dict:
        """Anomaly scores per datapoint: ``neg_elbo`` (-ELBO) and ``neg_log_px`` (-log p(x)).

        Both from the same ``num_samples`` draws of q(z|x) per point (see
        :mod:`ppvae.analysis.scoring`); higher means more anomalous. Also ``neg_elbo_stderr``, the
        Monte-Carlo standard error of ``neg_elbo``, and with ``latent_density`` the score
        ``neg_log_latent_density``: -log density of the point's posterior mean under a
        Gaussian mixture fit to the training split's posterior means.

        Parameters
        ----------
        x : numpy.ndarray, optional
            Prepared data (:meth:`load_data`); defaults to the run's held-out split.
        num_samples : int
            K, draws per point (the IWAE bound tightens as K grows).
        seed : int
            Seed of the draws.
        labels : numpy.ndarray, optional
            A conditional run's class labels, one per point (the scores are then of
            log p(x|y)); an unconditional run ignores them.
        latent_density : bool
            Also score by density in latent space (fits the mixture: seconds to a minute).

        Returns
        -------
        dict of numpy.ndarray
            float64 arrays of shape ``(n,)``.

        Examples
        --------
        >>> s = run.score(run.heldout()[:100], num_samples=500)     # doctest: +SKIP
        >>> s["neg_log_px"].argsort()[-5:]                           # the 5 most unusual points  # doctest: +SKIP
        """
        from ppvae.analysis.scoring import score_points

        if x is None:
            x, labels = self.heldout(), self.dataset().heldout_labels
        else:
            x = self._check(x)
        y = None
        if self.num_classes:
            if labels is None:
                raise DataError(
                    f"{self.path} is a conditional VAE: scoring needs the class label of every point; "
                    "pass labels (an .npz with 'y', or --labels FILE)"
                )
            y = sample_labels(self.num_classes, len(x), labels)
        if not isinstance(x, np.ndarray):
            # A streamed held-out split: scored chunk by chunk (chunk i draws with seed + i).
            parts = [
                score_points(
                    self.trained,
                    chunk,
                    latent_dim=self.config.model.latent_dim,
                    num_samples=num_samples,
                    seed=seed + i,
                    y=None,
                )
                for i, chunk in enumerate(x.chunks())
            ]
            scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            x = x[:] if latent_density else x
        else:
            scores = score_points(
                self.trained, x, latent_dim=self.config.model.latent_dim, num_samples=num_samples, seed=seed, y=y
            )
        if latent_density:
            from ppvae.analysis.scoring import latent_density_scores

            scores["neg_log_latent_density"] = latent_density_scores(
                self.training_codes()[0], self.encode(x, y)[0], seed=seed
            )
        return scores
