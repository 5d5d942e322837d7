"""Learning-rate schedules: one formula (ppvae.inference.schedules.lr_at) that both backends apply.

Every schedule is a function of the epoch alone, so a resumed run continues it exactly;
these tests check the formulas, that each backend's optimizer uses exactly the table's
rate in every step, that resuming reproduces an uninterrupted run, and the errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from conftest import FAST
from ppvae.errors import UsageError
from ppvae.inference.schedules import lr_at
from ppvae.spec.config import LR_SCHEDULES, TrainSpec


def test_the_schedules_follow_their_formulas():
    lr = 1e-3
    assert [lr_at(e, TrainSpec(lr=lr)) for e in range(3)] == [lr, lr, lr]
    step = TrainSpec(lr=lr, lr_schedule="step", lr_decay=0.5, lr_step_epochs=3)
    assert [lr_at(e, step) for e in range(7)] == [lr, lr, lr, lr / 2, lr / 2, lr / 2, lr / 4]
    expo = TrainSpec(lr=lr, lr_schedule="exponential", lr_decay=0.5, lr_step_epochs=2)
    assert [lr_at(e, expo) for e in range(3)] == pytest.approx([lr, lr * 0.5**0.5, lr * 0.5])
    cosine = TrainSpec(lr=lr, lr_schedule="cosine", lr_warmup_epochs=2, lr_min=1e-5, epochs=6)
    # Warm-up: lr (e + 1) / warmup; then cos from lr down to lr_min over the remaining 4 epochs.
    want = [lr / 2, lr] + [1e-5 + (lr - 1e-5) * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert [lr_at(e, cosine) for e in range(6)] == pytest.approx(want)
    # The IWAE paper: 3**i epochs at lr * 10**(-i/7), i = 0..7, then the last rate.
    iwae = TrainSpec(lr=lr, lr_schedule="iwae")
    starts = np.cumsum([0] + [3**i for i in range(8)])
    for i in range(8):
        for e in (starts[i], starts[i + 1] - 1):
            assert lr_at(int(e), iwae) == pytest.approx(lr * 10 ** (-i / 7)), (i, e)
    assert lr_at(100_000, iwae) == pytest.approx(lr * 10**-1)
    assert LR_SCHEDULES == ("constant", "exponential", "step", "cosine", "iwae")


def _applied_rates(monkeypatch, backend: str, steps_per_epoch: int) -> list[float]:
    """The learning rate each optimizer step of the next fit uses, read from the optimizer itself."""
    rates: list[float] = []
    if backend == "pyro":
        import torch

        original = torch.optim.Adam.step

        def step(self, *args, **kwargs):
            rates.append(self.param_groups[0]["lr"])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", step)
        return rates
    import optax

    original_adam = optax.adam

    def adam(learning_rate, *args, **kwargs):
        # The count of optax's schedule is the step; 3 epochs' worth of steps are read back.
        if callable(learning_rate):
            rates.extend(float(learning_rate(i)) for i in range(3 * steps_per_epoch))
        else:
            rates.extend([float(learning_rate)] * (3 * steps_per_epoch))
        return original_adam(learning_rate, *args, **kwargs)

    monkeypatch.setattr(optax, "adam", adam)
    return rates


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_each_step_uses_the_rate_of_its_epoch(tmp_path, digits_npy, monkeypatch, backend):
    # 480 training digits in batches of 128: 4 steps per epoch (the last one smaller).
    rates = _applied_rates(monkeypatch, backend, steps_per_epoch=4)
    spec = dict(lr=1e-3, lr_schedule="step", lr_decay=0.1, lr_step_epochs=1)
    run = ppvae.fit(
        out=tmp_path / "r",
        backend=backend,
        data=str(digits_npy),
        latent_dim=2,
        epochs=3,
        batch_size=128,
        pictures=False,
        overrides=FAST,
        **spec,
    )
    per_epoch = [1e-3, 1e-4, 1e-5]
    assert rates == pytest.approx([r for r in per_epoch for _ in range(4)], rel=1e-6)
    assert [r["lr"] for r in run.metrics()] == pytest.approx(per_epoch)
    assert run.config.train.lr_schedule == "step"  # recorded in config.toml
    assert ppvae.load(tmp_path / "r").config.train.lr_step_epochs == 1


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_resume_continues_the_schedule_exactly(tmp_path, digits_npy, backend):
    spec = dict(
        backend=backend,
        data=str(digits_npy),
        latent_dim=2,
        batch_size=128,
        pictures=False,
        overrides=FAST,
        lr=3e-3,
        lr_schedule="cosine",
        lr_warmup_epochs=1,
    )
    whole = ppvae.fit(out=tmp_path / "whole", epochs=3, **spec)
    ppvae.fit(out=tmp_path / "parts", epochs=3, stop_after_steps=6, **spec)  # stops inside epoch 2
    parts = ppvae.fit(resume=tmp_path / "parts", pictures=False)
    assert [r["lr"] for r in parts.metrics()] == [r["lr"] for r in whole.metrics()]
    a, b = (r.trained.state_arrays() if backend == "pyro" else r.trained.params for r in (whole, parts))
    if backend == "pyro":
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    else:
        import jax

        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"lr_schedule": "linear"}, "choose one of: constant, exponential, step, cosine, iwae"),
        ({"lr_decay": 0.0}, "train.lr_decay must be in (0, 1]"),
        ({"lr_decay": 1.5}, "train.lr_decay must be in (0, 1]"),
        ({"lr_step_epochs": 0}, "train.lr_step_epochs must be a positive integer"),
        ({"lr_warmup_epochs": -1}, "train.lr_warmup_epochs must be a non-negative integer"),
        ({"lr_min": 1e-2}, "train.lr_min must be at least 0 and below train.lr"),
    ],
)
def test_bad_schedule_settings_are_one_line_each(settings, words, tmp_path):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        TrainSpec(**settings)
    from ppvae.cli import cli

    args = [f"train.{k}={v}" for k, v in settings.items()]
    res = CliRunner().invoke(cli, ["fit", "--out", str(tmp_path / "r"), *[a for s in args for a in ("--set", s)]])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "r").exists()


def test_fit_help_teaches_the_schedules():
    from ppvae.cli import cli

    text = CliRunner().invoke(cli, ["fit", "--help"], terminal_width=200).output
    assert "--lr-schedule" in text and "iwae" in text
    res = CliRunner().invoke(cli, ["fit", "--lr-schedule", "bogus"])
    assert res.exit_code == 2


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_streamed_data_follow_the_schedule_too(tmp_path, digits_npy, monkeypatch, backend):
    # data.stream reads the rows from their .npy file; the schedule is the same.
    x = np.load(digits_npy)["x"]
    np.save(tmp_path / "digits.npy", x)
    rates = _applied_rates(monkeypatch, backend, steps_per_epoch=4)
    run = ppvae.fit(
        out=tmp_path / "r",
        backend=backend,
        data=str(tmp_path / "digits.npy"),
        latent_dim=2,
        epochs=3,
        batch_size=128,
        pictures=False,
        overrides={**FAST, "data.stream": True},
        lr=1e-3,
        lr_schedule="step",
        lr_decay=0.1,
        lr_step_epochs=1,
    )
    assert run.dataset().streaming
    assert rates == pytest.approx([r for r in (1e-3, 1e-4, 1e-5) for _ in range(4)], rel=1e-6)
