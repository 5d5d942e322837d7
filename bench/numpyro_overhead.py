"""NumPyro backend overhead: ppvae's compiled epoch against a hand-written JAX epoch (issue 3).

Protocol MNIST-10k v1, reference network mlp-400 (784-400-(20, 20), 20-400-784, ReLU,
Bernoulli likelihood, standard Normal prior, Adam 1e-3, batch 128, Z = 20), 8,000
training images with dynamic binarization.

Both sides train the same network on the same data in the same process, the same way:

* **ppvae** -- the NumPyro backend's :class:`~ppvae.backends.numpyro.trainer.Trainer`
  (built from ``models/mlp-400.toml`` with ``train.backend = "numpyro"``). Its epoch is
  timed exactly as ``Trainer.fit`` times it: the ahead-of-time compiled epoch program
  (``lax.scan`` over the 62 full batches of 128) and then the compiled single step for
  the last 64 images, until their outputs are on the host. Compilation is excluded.
* **hand-written** -- plain JAX + optax, no NumPyro, no Equinox: pure functions on a
  params pytree (weights initialized uniform in +-1/sqrt(fan_in) like Equinox/torch),
  loss = batch mean of [BCE-with-logits summed over pixels + KL] with one
  reparameterized sample, ``jax.random.bernoulli`` binarization per batch, the whole epoch
  one ``jax.jit`` with ``lax.scan`` over the same 62 batches, plus one jitted step for the
  same 64-image rest. The KL is analytic (baseline of ``elbo = "meanfield"``) or sampled,
  log q(z|x) - log p(z) (baseline of ``elbo = "trace"``).

Both sides visit the batches in the same order (``default_rng([seed, epoch])``, as
ppvae does) and return the same per-step values (loss, reconstruction, KL); a check at
start-up feeds ppvae's initial weights, one binarized batch and NumPyro's noise to the
hand-written loss and compares (they agree to ~2e-7).

Timing: the four programs (hand-written analytic KL, ppvae meanfield, hand-written sampled
KL, ppvae trace) are timed interleaved, one epoch each per round, after warm-up rounds. The
order rotates every round and every round starts with an untimed primer epoch (a fixed
order put one program first after the idle check every time, and that position measured
~7 % slower). The machine is shared: before each round the script waits until other
processes are quiet, and a round during which they used more than 10 % of a core is
repeated (counted in the JSON). The two hand-written programs have the same op count, so
their ratio is an A/A control of the noise.

Usage::

    python bench/numpyro_overhead.py --hlo            # writes bench/results/numpyro_overhead.{json,md}
    python bench/numpyro_overhead.py --rounds 20 --max-wait 0 --max-others-share 100   # a busy machine
    python bench/numpyro_overhead.py --rounds 100 --variant-rounds 60 --warmup 3 --hlo --variants

``--hlo`` counts the operations that the optimized (compiled) HLO of each program
executes, to show where a difference comes from. ``--variants`` also times ppvae with
candidate changes to its NumPyro backend, applied by monkeypatching inside this script
(see ``VARIANTS``; ppvae itself is not changed).

This is a measurement, not a test: a busy machine changes the times. The load average and
the other processes' CPU share are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
PROTOCOL = "MNIST-10k v1"
SPEC = HERE.parent / "models" / "mlp-400.toml"
MIN_SCALE = 1e-5  # smallest posterior scale, as in ppvae's networks


# -- environment -----------------------------------------------------------------------------------
def machine() -> dict:
    import equinox
    import jax
    import jaxlib
    import numpyro
    import optax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices()[0]),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpyro": numpyro.__version__,
        "equinox": equinox.__version__,
        "optax": optax.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def others_cpu_seconds() -> float:
    """CPU seconds used so far by every process but this one (Linux /proc; 0 elsewhere)."""
    me, ticks, total = os.getpid(), os.sysconf("SC_CLK_TCK"), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def wait_until_quiet(max_share: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``max_share`` of one core
    over half a second; returns the seconds waited."""
    waited = 0.0
    while waited < max_wait:
        before = others_cpu_seconds()
        time.sleep(0.5)
        waited += 0.5
        if others_cpu_seconds() - before < 0.5 * max_share:
            break
    return waited


# -- the hand-written JAX VAE ------------------------------------------------------------------------
def hand_init(key, x_dim: int = 784, hidden: int = 400, z_dim: int = 20, layout: str = "in_out") -> dict:
    """Params pytree of mlp-400; weights and biases uniform in +-1/sqrt(fan_in).

    ``layout="in_out"``: weights (fan_in, fan_out), ``x @ w`` (the plain JAX/Flax convention);
    ``"out_in"``: (fan_out, fan_in), ``x @ w.T`` (the torch/Equinox convention ppvae uses).
    """
    import jax

    def linear(k, n_in, n_out):
        kw, kb = jax.random.split(k)
        bound = 1.0 / math.sqrt(n_in)
        shape = (n_in, n_out) if layout == "in_out" else (n_out, n_in)
        return {
            "w": jax.random.uniform(kw, shape, minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (n_out,), minval=-bound, maxval=bound),
        }

    k = jax.random.split(key, 5)
    return {
        "enc": linear(k[0], x_dim, hidden),
        "loc": linear(k[1], hidden, z_dim),
        "raw_scale": linear(k[2], hidden, z_dim),
        "dec": linear(k[3], z_dim, hidden),
        "out": linear(k[4], hidden, x_dim),
    }


def hand_loss(params, eps, x, analytic_kl: bool, layout: str = "in_out"):
    """Batch mean of -ELBO; ``eps`` is the standard Normal noise of the one sample."""
    import jax
    import jax.numpy as jnp

    def dense(p, v):
        return (v @ p["w"] if layout == "in_out" else v @ p["w"].T) + p["b"]

    h = jax.nn.relu(dense(params["enc"], x))
    loc = dense(params["loc"], h)
    scale = jax.nn.softplus(dense(params["raw_scale"], h)) + MIN_SCALE
    z = loc + scale * eps
    logits = dense(params["out"], jax.nn.relu(dense(params["dec"], z)))
    rec = jnp.sum(jax.nn.softplus(logits) - x * logits, axis=-1)  # BCE with logits
    if analytic_kl:
        kl = jnp.sum(0.5 * (scale**2 + loc**2 - 1.0) - jnp.log(scale), axis=-1)
    else:  # log q(z|x) - log p(z); the 0.5 log(2 pi) terms cancel
        kl = jnp.sum(-0.5 * eps**2 - jnp.log(scale) + 0.5 * z**2, axis=-1)
    loss = jnp.mean(rec + kl)
    return loss, jnp.stack([loss, rec.mean(), kl.mean()])


def hand_programs(optimizer, analytic_kl: bool, layout: str = "in_out"):
    """(epoch, step), both jitted: the plain training loop a JAX user writes."""
    import jax
    import optax

    def step(params, opt_state, key, xb):
        binarize_key, noise_key = jax.random.split(key)
        xb = jax.random.bernoulli(binarize_key, xb).astype(xb.dtype)
        eps = jax.random.normal(noise_key, (xb.shape[0], params["loc"]["b"].shape[0]))
        (_, values), grads = jax.value_and_grad(hand_loss, has_aux=True)(params, eps, xb, analytic_kl, layout)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, values

    def epoch(params, opt_state, key, x_train, batches):
        keys = jax.random.split(key, batches.shape[0])

        def body(carry, inputs):
            idx, k = inputs
            params, opt_state, values = step(*carry, k, x_train[idx])
            return (params, opt_state), values

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), (batches, keys))
        return params, opt_state, values

    return jax.jit(epoch), jax.jit(step)


class Hand:
    """The hand-written side: params, optimizer state, compiled programs, one timed epoch."""

    def __init__(self, x_train, seed: int, batch_size: int, analytic_kl: bool, lr: float, layout: str = "in_out"):
        import jax
        import jax.numpy as jnp
        import optax

        self.name = (
            "hand-written "
            + ("analytic KL" if analytic_kl else "sampled KL")
            + ("" if layout == "in_out" else ", torch weight layout")
        )
        self.seed, self.batch_size, self.epoch = seed, batch_size, 0
        self.x_train = jnp.asarray(x_train.reshape(x_train.shape[0], -1))  # flattened once
        self.optimizer = optax.adam(lr)
        init_key, self.train_key = jax.random.split(jax.random.PRNGKey(seed))
        self.params = hand_init(init_key, layout=layout)
        self.opt_state = self.optimizer.init(self.params)
        self._epoch_fn, self._step_fn = hand_programs(self.optimizer, analytic_kl, layout)
        self.programs = None
        self.compile_seconds = 0.0

    def _inputs(self):
        import jax
        import jax.numpy as jnp

        n = self.x_train.shape[0]
        n_full, rest = divmod(n, self.batch_size)
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        batches = jnp.asarray(perm[: n_full * self.batch_size].reshape(n_full, self.batch_size))
        rest_idx = jnp.asarray(perm[n_full * self.batch_size :])
        epoch_key = jax.random.fold_in(self.train_key, self.epoch)
        return batches, rest_idx, epoch_key, jax.random.fold_in(epoch_key, n_full + 1), rest

    def run_epoch(self) -> float:
        import jax

        batches, rest_idx, epoch_key, rest_key, rest = self._inputs()
        if self.programs is None:  # compile ahead of time, like ppvae's Trainer
            started = time.perf_counter()
            self.programs = (
                self._epoch_fn.lower(self.params, self.opt_state, epoch_key, self.x_train, batches).compile(),
                self._step_fn.lower(self.params, self.opt_state, rest_key, self.x_train[rest_idx]).compile()
                if rest
                else None,
            )
            self.compile_seconds = time.perf_counter() - started
        epoch_fn, step_fn = self.programs
        started, cpu_started = time.perf_counter(), time.process_time()
        params, opt_state, values = epoch_fn(self.params, self.opt_state, epoch_key, self.x_train, batches)
        parts = [np.asarray(values, dtype=np.float64)]
        if rest:
            params, opt_state, values = step_fn(params, opt_state, rest_key, self.x_train[rest_idx])
            parts.append(np.asarray(values, dtype=np.float64)[None])
        jax.block_until_ready((params, opt_state))
        seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu_started
        self.params, self.opt_state = params, opt_state
        self.epoch += 1
        self.last_loss = float(np.concatenate(parts)[:, 0].mean())
        return seconds


# -- the ppvae side -----------------------------------------------------------------------------------
def ppvae_config(elbo: str):
    from ppvae.spec import registry
    from ppvae.api import resolve_config, build_config

    registry.load_backend("numpyro")
    return resolve_config(build_config(SPEC, {"train.backend": "numpyro", "train.device": "cpu", "train.elbo": elbo}))


class PPVAE:
    """The ppvae side: a NumPyro-backend Trainer whose epoch is run and timed as ``Trainer.fit`` does."""

    def __init__(self, dataset, elbo: str, run_dir: Path, variant: tuple[str, ...] = ()):
        from ppvae.backends.numpyro.trainer import Trainer

        self.name = f"ppvae numpyro {elbo}" + (f" + {', '.join(variant)}" if variant else "")
        self.cfg = ppvae_config(elbo)
        self.variant = variant
        with patched(variant):
            self.trainer = Trainer(self.cfg, dataset, run_dir, progress=False)
        self.epoch = 0

    def run_epoch(self) -> float:
        """One epoch, the statements of ``Trainer.fit`` between its two clock readings."""
        import jax
        import jax.numpy as jnp

        from ppvae.inference.schedules import beta_at

        tr, t = self.trainer, self.cfg.train
        n = tr.x_train.shape[0]
        n_full, rest = divmod(n, t.batch_size)
        step0 = self.epoch * (n_full + (1 if rest else 0))
        perm = np.random.default_rng([t.seed, self.epoch]).permutation(n)
        batches = jnp.asarray(perm[: n_full * t.batch_size].reshape(n_full, t.batch_size))
        betas = jnp.asarray([beta_at(step0 + i, t) for i in range(n_full)], dtype=jnp.float32)
        epoch_key = jax.random.fold_in(tr.train_key, self.epoch)
        params, opt_state = tr.params, tr.opt_state
        rest_idx = jnp.asarray(perm[n_full * t.batch_size :])
        rest_beta = jnp.float32(beta_at(step0 + n_full, t))
        rest_key = jax.random.fold_in(epoch_key, n_full + 1)
        with patched(self.variant):  # a variant's patches act while the programs are traced
            epoch_fn = tr._program("epoch", tr._epoch_fn, params, opt_state, epoch_key, tr.x_train, batches, betas)
            step_fn = (
                tr._program("step", tr._step_fn, params, opt_state, rest_key, tr.x_train[rest_idx], rest_beta)
                if rest
                else None
            )
        started, cpu_started = time.perf_counter(), time.process_time()
        params, opt_state, values = epoch_fn(params, opt_state, epoch_key, tr.x_train, batches, betas)
        parts = [np.asarray(values, dtype=np.float64)]
        if rest:
            params, opt_state, values = step_fn(params, opt_state, rest_key, tr.x_train[rest_idx], rest_beta)
            parts.append(np.asarray(values, dtype=np.float64)[None])
        jax.block_until_ready((params, opt_state))
        seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu_started
        tr.params, tr.opt_state = params, opt_state
        self.epoch += 1
        self.last_loss = float(np.concatenate(parts)[:, 0].mean())
        return seconds

    @property
    def compile_seconds(self) -> float:
        return self.trainer.compile_seconds


# -- candidate changes to ppvae, applied by monkeypatching (bench only; ppvae is unchanged) -------
#: name -> what it changes; see :func:`patched`.
VARIANTS = {
    "prior-constant": "the prior's loc/scale are not registered as params (ppvae.backends.numpyro.model."
    "_has_params is False for NormalPrior): no zero-gradient Adam updates of 2x20 "
    "constants, fewer loop-carried arrays",
    "softplus-likelihood": "the 'x' site's Bernoulli log-probability as x * logits - softplus(logits) on "
    "(B, D) rows, the hand-written formula (no infinite-logit clause; other gradient bits)",
}


def _softplus_site_log_prob(original):
    """A replacement for ``ppvae.backends.numpyro.objectives._site_log_prob`` (bench variant only)."""
    import jax
    import numpyro.distributions as dist

    def site_log_prob(site):
        fn, value = site["fn"], site["value"]
        if not (isinstance(fn, dist.Independent) and type(fn.base_dist) is dist.BernoulliLogits):
            return original(site)
        k, logits = fn.reinterpreted_batch_ndims, fn.base_dist.logits
        logits, x = logits.reshape(logits.shape[:-k] + (-1,)), value.reshape(value.shape[:-k] + (-1,))
        return (x * logits - jax.nn.softplus(logits)).sum(-1)

    return site_log_prob


#: The variants that --variants times and --profile profiles (each a tuple of VARIANTS names).
CANDIDATES = [("prior-constant",), ("softplus-likelihood",)]


@contextlib.contextmanager
def patched(variant: tuple[str, ...]):
    """Monkeypatch ppvae's NumPyro backend with the named candidate changes (see :data:`VARIANTS`)."""
    from ppvae.backends.numpyro import model
    from ppvae.model.priors import NormalPrior

    unknown = set(variant) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; valid: {sorted(VARIANTS)}")
    with contextlib.ExitStack() as stack:
        if "prior-constant" in variant:
            original = model._has_params
            stack.enter_context(
                mock.patch.object(
                    model,
                    "_has_params",
                    lambda m: not isinstance(getattr(m, "spec", None), NormalPrior) and original(m),
                )
            )
        if "softplus-likelihood" in variant:
            from ppvae.backends.numpyro import objectives

            stack.enter_context(
                mock.patch.object(objectives, "_site_log_prob", _softplus_site_log_prob(objectives._site_log_prob))
            )
        yield


# -- checks --------------------------------------------------------------------------------------------
def same_function_check(dataset) -> dict:
    """Both sides compute the same loss: ppvae's initial weights in the hand-written loss,
    the same binarized batch and the same noise as NumPyro draws it."""
    import jax
    import jax.numpy as jnp

    from ppvae.backends.numpyro.trainer import Trainer

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for elbo, analytic in (("meanfield", True), ("trace", False)):
            tr = Trainer(ppvae_config(elbo), dataset, Path(tmp), progress=False)
            enc, dec = tr.params["encoder$params"], tr.params["decoder$params"]

            def lin(layer):
                return {"w": layer.weight.T, "b": layer.bias}

            params = {
                "enc": lin(enc.body.layers[0]),
                "loc": lin(enc.head.loc),
                "raw_scale": lin(enc.head.raw_scale),
                "dec": lin(dec.net.layers[0]),
                "out": lin(dec.net.layers[2]),
            }
            key = jax.random.PRNGKey(123)
            xb = tr.x_train[:128]
            binarize_key, loss_key = jax.random.split(key)
            xbin = jax.random.bernoulli(binarize_key, xb).astype(xb.dtype)
            _, values = tr._loss(tr.params, loss_key, xbin, jnp.float32(1.0))
            # NumPyro's seed handler: guide key = split(loss_key)[0], first sample site gets split(.)[1].
            guide_key = jax.random.split(loss_key)[0]
            eps = jax.random.normal(jax.random.split(guide_key)[1], (128, 20))
            _, hand_values = hand_loss(params, eps, xbin.reshape(128, -1), analytic)
            out[elbo] = {
                "ppvae": np.asarray(values).tolist(),
                "hand_written": np.asarray(hand_values).tolist(),
                "max_abs_diff": float(np.max(np.abs(np.asarray(values) - np.asarray(hand_values)))),
            }
    return out


_SKIP = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}


def hlo_thunks(text: str) -> dict:
    """What an optimized HLO module executes: the instructions of the entry computation and
    of the while/conditional/call computations reachable from it (a fusion counts once, as
    one kernel), by opcode, without parameter/tuple/get-tuple-element/constant/bitcast;
    plus fusion kinds."""
    comps: dict[str, list[tuple[str, str]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        head = re.match(r"^(ENTRY )?%([^\s(]+) .*\{\s*$", line)
        if head:
            current = head.group(2)
            comps[current] = []
            if head.group(1):
                entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None or " = " not in line:
            continue
        rhs = line.split(" = ", 1)[1]
        if rhs.startswith("("):  # tuple type: skip to the matching parenthesis
            depth, i = 0, 0
            for i, ch in enumerate(rhs):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0:
                    break
            rest = rhs[i + 1 :]
        else:
            rest = rhs.split(" ", 1)[1] if " " in rhs else ""
        op = re.match(r"\s*([\w\-]+)", rest)
        if op:
            comps[current].append((op.group(1), line))

    def reachable(start: str) -> set:
        executed, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name in executed or name not in comps:
                continue
            executed.add(name)
            for op, line in comps[name]:
                if op in ("while", "conditional", "call"):
                    todo += re.findall(
                        r"(?:body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)", line
                    )
                    for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
                        todo += [g.strip().lstrip("%") for g in group.split(",")]
        return executed

    def count(names) -> int:
        return sum(op not in _SKIP for name in names for op, _ in comps[name])

    executed = reachable(entry)
    # The scan: the entry's while loop with the largest body. What one training step runs
    # is its body and the loops inside it (a threefry loop counted once, not per round).
    loops = [re.search(r"body=%([\w.\-]+)", line).group(1) for op, line in comps[entry] if op == "while"]
    scan_body = max(loops, key=lambda b: len(comps.get(b, ())), default=None)
    per_step = reachable(scan_body) if scan_body else set()
    ops, kinds = collections.Counter(), collections.Counter()
    for name in executed:
        for op, line in comps[name]:
            if op in _SKIP:
                continue
            ops[op] += 1
            kind = re.search(r"kind=(k\w+)", line)
            if op == "fusion" and kind:
                kinds[kind.group(1)] += 1
    return {
        "executed_ops": sum(ops.values()),
        "by_opcode": dict(ops.most_common()),
        "ops_per_step": count(per_step) if per_step else None,
        "while_loops_per_step": sum(op == "while" for name in per_step for op, _ in comps[name]),
        "fusion_kinds": dict(kinds.most_common()),
        "computations": len(comps),
        "lines": len(text.splitlines()),
    }


def hlo_report(sides: list) -> dict:
    """Executed ops of the optimized (compiled) epoch program and rest-step program of each side."""
    out = {}
    for side in sides:
        if isinstance(side, PPVAE):
            progs = {"epoch": side.trainer._programs["epoch"], "step": side.trainer._programs.get("step")}
        else:
            progs = dict(zip(("epoch", "step"), side.programs))
        out[side.name] = {label: hlo_thunks(prog.as_text()) for label, prog in progs.items() if prog is not None}
    return out


# -- where the time goes: XLA's per-operation (thunk) profile ----------------------------------------
_CATEGORIES = [  # (label, test on (opcode, op_name, fusion kind)); the first match wins
    ("random: key splits (threefry loops)", lambda op, name, kind: "threefry_split" in name),
    (
        "random: Bernoulli binarization",
        lambda op, name, kind: "_bernoulli" in name or name.endswith("convert_element_type"),
    ),
    ("random: Normal noise", lambda op, name, kind: "_normal" in name),
    (
        "matmuls (dot, XNNPACK fusions)",
        lambda op, name, kind: (
            op == "dot" or (kind == "kCustom" and ("dot_general" in name or name.endswith("transpose")))
        ),
    ),
    ("forward + backward elementwise and reductions", lambda op, name, kind: "jvp(" in name),
    ("Adam update", lambda op, name, kind: name != "-" and not name.endswith(("while", "dynamic_update_slice"))),
    ("loop-carried copies", lambda op, name, kind: op == "copy"),
    ("while loops (control)", lambda op, name, kind: op in ("while", "call", "conditional")),
]


def _instructions(text: str) -> dict[str, tuple[str, str, str]]:
    """HLO instruction name -> (opcode, op_name metadata, fusion kind)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?%([\w.\-]+) = ", line)
        if not m:
            continue
        rhs = line.split(" = ", 1)[1]
        if rhs.startswith("("):
            depth, i = 0, 0
            for i, ch in enumerate(rhs):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0:
                    break
            rest = rhs[i + 1 :]
        else:
            rest = rhs.split(" ", 1)[1] if " " in rhs else ""
        op = re.match(r"\s*([\w\-]+)", rest)
        name = re.search(r'op_name="([^"]*)"', line)
        kind = re.search(r"kind=(k\w+)", line)
        out[m.group(1)] = (op.group(1) if op else "?", name.group(1) if name else "-", kind.group(1) if kind else "")
    return out


def profile_side(side, epochs: int, where: Path) -> dict:
    """Run ``epochs`` epochs under JAX's profiler and attribute XLA's per-thunk times (exclusive
    of nested thunks) to categories; the profiler's own overhead inflates small thunks, so read
    the differences between programs, not the absolute numbers."""
    import gzip
    import glob

    import jax

    side.run_epoch()  # compiled and warm
    progs = (
        [side.trainer._programs["epoch"], side.trainer._programs.get("step")]
        if isinstance(side, PPVAE)
        else list(side.programs)
    )
    instr: dict[tuple[str, str], tuple[str, str, str]] = {}  # (module, instruction) -> ...
    shapes: dict[tuple[str, str], str] = {}
    for prog in progs:
        if prog is not None:
            text = prog.as_text()
            module = re.match(r"HloModule ([\w.\-]+)", text).group(1)
            instr.update({(module, k): v for k, v in _instructions(text).items()})
            shapes.update(
                {
                    (module, m.group(1)): m.group(2)
                    for m in re.finditer(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (\w+\[[^\]]*\])", text, re.MULTILINE)
                }
            )
    jax.profiler.start_trace(str(where), create_perfetto_trace=True)
    wall = sum(side.run_epoch() for _ in range(epochs))
    jax.profiler.stop_trace()
    trace = json.load(gzip.open(sorted(glob.glob(f"{where}/**/perfetto_trace.json.gz", recursive=True))[-1]))
    events = [
        e
        for e in (trace["traceEvents"] if isinstance(trace, dict) else trace)
        if e.get("ph") == "X" and (e.get("args", {}).get("hlo_module"), e.get("name")) in instr
    ]
    exclusive: dict[int, float] = {}
    by_thread: dict = collections.defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
        exclusive[i] = float(e["dur"])
    for idx in by_thread.values():  # subtract children (nested thunks of while/call) from parents
        idx.sort(key=lambda i: (float(events[i]["ts"]), -float(events[i]["dur"])))
        stack: list[int] = []
        for i in idx:
            start = float(events[i]["ts"])
            while stack and float(events[stack[-1]]["ts"]) + float(events[stack[-1]]["dur"]) <= start:
                stack.pop()
            if stack:
                exclusive[stack[-1]] -= float(events[i]["dur"])
            stack.append(i)
    cats: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    per_op: dict[tuple, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for i, e in enumerate(events):
        op, name, kind = instr[(e["args"]["hlo_module"], e["name"])]
        per_op[(e["args"]["hlo_module"], e["name"])][0] += exclusive[i] / 1e3 / epochs
        per_op[(e["args"]["hlo_module"], e["name"])][1] += 1 / epochs
        label = next((lab for lab, test in _CATEGORIES if test(op, name, kind)), "other (unnamed fusions)")
        cats[label][0] += exclusive[i] / 1e3 / epochs
        cats[label][1] += 1 / epochs
    total = sum(v[0] for v in cats.values())
    return {
        "epochs": epochs,
        "wall_ms_per_epoch_profiled": 1e3 * wall / epochs,
        "thunk_ms_per_epoch": total,
        "thunks_per_epoch": sum(v[1] for v in cats.values()),
        "categories": {
            k: {"ms_per_epoch": round(v[0], 2), "thunks_per_epoch": round(v[1])}
            for k, v in sorted(cats.items(), key=lambda kv: -kv[1][0])
        },
        # the costliest instructions: what to compare between two programs
        "top_instructions": [
            {
                "instruction": key[1],
                "opcode": instr[key][0],
                "shape": shapes.get(key, "?"),
                "op_name": instr[key][1][-120:],
                "ms_per_epoch": round(v[0], 3),
                "runs_per_epoch": round(v[1]),
            }
            for key, v in sorted(per_op.items(), key=lambda kv: -kv[1][0])[:40]
        ],
    }


# -- the measurement -------------------------------------------------------------------------------------
def summarize(times: list[float]) -> dict:
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "mean": statistics.fmean(times),
        "n": len(times),
    }


#: A round counts only if other processes used less than this share of one core during it.
MAX_OTHERS_SHARE = 0.10


def measure(
    sides: list, rounds: int, warmup: int, label: str, max_wait: float = 600.0, max_share: float | None = None
) -> dict:
    """Interleaved timing: per round one epoch of every program, the order rotated every round
    (A B C D, B C D A, ...); ``warmup`` rounds untimed.

    Each round starts with an untimed epoch of the round's last program: without it the first
    program of a round, which starts right after the quiet check's sleep, measured ~7 % slower
    on the 2-core VM (CPU idle states), which biased a fixed order.

    The machine is shared: before each round it waits for other processes to go quiet, and a
    round during which other processes used more than ``MAX_OTHERS_SHARE`` of a core is
    recorded as contended and repeated (at most ``3 * rounds`` attempts in all).
    ``max_share`` overrides ``MAX_OTHERS_SHARE`` (a large value accepts every round: the
    only option on a machine that is never quiet; the ratios stay interleaved).
    """
    max_share = MAX_OTHERS_SHARE if max_share is None else max_share
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    cpu_times: dict[str, list[float]] = {s.name: [] for s in sides}
    warm: dict[str, list[float]] = {s.name: [] for s in sides}
    contended: list[dict] = []
    loads, shares, orders, before = [], [], [], load_average()
    done, attempts = 0, 0
    while done < warmup + rounds and attempts < warmup + 3 * rounds:
        attempts += 1
        waited = wait_until_quiet(max_share, max_wait) if done >= warmup and max_wait > 0 else 0.0
        shift = done % len(sides)
        order = sides[shift:] + sides[:shift]  # rotated: every program takes every position equally often
        order[-1].run_epoch()  # untimed primer: the first timed epoch does not start from an idle machine
        cpu0, t0 = others_cpu_seconds(), time.perf_counter()
        got = {side.name: side.run_epoch() for side in order}
        got = {side.name: got[side.name] for side in sides}
        share = (others_cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        load = load_average()[0]
        # a negative share means a busy process ended during the round: contended too
        clean = done < warmup or -max_share < share < max_share
        if clean:
            into = warm if done < warmup else times
            for name, seconds in got.items():
                into[name].append(seconds)
            if done >= warmup:
                for side in sides:
                    cpu_times[side.name].append(side.cpu_seconds)
            loads.append(load)
            shares.append(round(share, 3))
            orders.append(shift)
            done += 1
        else:
            contended.append({"others_cpu_share": round(share, 3), "load": load, "epoch_seconds": got})
        print(
            f"{label} round {done}/{warmup + rounds}{'' if clean else ' (contended, repeated)'}: "
            + ", ".join(f"{name} {s:.3f} s" for name, s in got.items())
            + f"  (load {load}, others {share:.0%} of a core, waited {waited:.0f} s)",
            file=sys.stderr,
        )
    return {
        "epoch_seconds": times,
        "warmup_epoch_seconds": warm,
        "stats": {name: summarize(ts) for name, ts in times.items() if ts},
        # CPU seconds of this process (all its threads) per epoch: on a machine that other
        # work keeps busy, wall time mostly measures waiting; CPU time much less so.
        "epoch_cpu_seconds": cpu_times,
        "cpu_stats": {name: summarize(ts) for name, ts in cpu_times.items() if ts},
        "load_average": {"before": before, "after": load_average(), "one_minute_per_round": loads},
        "others_cpu_share_per_round": shares,
        "rotation_per_round": orders,
        "contended_rounds_discarded": contended,
        "final_epoch_loss": {s.name: s.last_loss for s in sides},
        "compile_seconds": {s.name: s.compile_seconds for s in sides},
        "ppvae_compilations": {s.name: s.trainer.compilations for s in sides if isinstance(s, PPVAE)},
    }


def ratio(phase: dict, num: str, den: str) -> dict:
    times = phase["epoch_seconds"]
    return {
        "ppvae": num,
        "hand_written": den,
        "ratio_of_medians": phase["stats"][num]["median"] / phase["stats"][den]["median"],
        "per_round_ratio": summarize([a / b for a, b in zip(times[num], times[den])]),
        "cpu_ratio_of_medians": phase["cpu_stats"][num]["median"] / phase["cpu_stats"][den]["median"],
        "cpu_per_round_ratio": summarize(
            [a / b for a, b in zip(phase["epoch_cpu_seconds"][num], phase["epoch_cpu_seconds"][den])]
        ),
    }


def print_tables(phase: dict, ratios: dict, n_train: int) -> None:
    la, shares = phase["load_average"], phase["others_cpu_share_per_round"]
    print(
        f"Load average (1, 5, 15 min): before {la['before']}, after {la['after']}; "
        f"1-min load per round {min(la['one_minute_per_round'])}-{max(la['one_minute_per_round'])} "
        f"(this process included); other processes {min(shares):.0%}-{max(shares):.0%} of a core per round; "
        f"{len(phase['contended_rounds_discarded'])} contended round(s) repeated"
    )
    print()
    print("| program | median s/epoch | min | max | images/s (median) | median CPU s/epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s in phase["stats"].items():
        print(
            f"| {name} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} | {n_train / s['median']:,.0f} "
            f"| {phase['cpu_stats'][name]['median']:.3f} |"
        )
    print()
    print(
        "| comparison | ratio of medians | per-round ratio: median | min | max | CPU time: ratio of medians "
        "| per-round median |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in ratios.items():
        pr, cr = r["per_round_ratio"], r["cpu_per_round_ratio"]
        print(
            f"| {label} | {r['ratio_of_medians']:.3f} | {pr['median']:.3f} | {pr['min']:.3f} | {pr['max']:.3f} "
            f"| {r['cpu_ratio_of_medians']:.3f} | {cr['median']:.3f} |"
        )
    print()


def print_profile(profile: dict) -> None:
    names = list(profile)
    labels = sorted(
        {c for p in profile.values() for c in p["categories"]},
        key=lambda c: -max(p["categories"].get(c, {}).get("ms_per_epoch", 0) for p in profile.values()),
    )
    print("XLA per-operation profile, ms per epoch (operations executed per epoch):")
    print()
    print("| category | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for label in labels:
        cells = []
        for n in names:
            c = profile[n]["categories"].get(label)
            cells.append(f"{c['ms_per_epoch']:.1f} ({c['thunks_per_epoch']:,})" if c else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "| all operations | "
        + " | ".join(f"{profile[n]['thunk_ms_per_epoch']:.1f} ({profile[n]['thunks_per_epoch']:,.0f})" for n in names)
        + " |"
    )
    print(
        "| epoch wall time under the profiler | "
        + " | ".join(f"{profile[n]['wall_ms_per_epoch_profiled']:.1f}" for n in names)
        + " |"
    )
    print()
    for n in names:
        print(f"Costliest instructions of {n} (ms per epoch, runs per epoch):")
        print()
        print("| ms | runs | opcode | shape | op_name |")
        print("| --- | --- | --- | --- | --- |")
        for t in profile[n].get("top_instructions", [])[:15]:
            print(
                f"| {t['ms_per_epoch']:.2f} | {t['runs_per_epoch']} | {t['opcode']} | {t['shape']} | "
                f"{t['op_name'][-70:]} |"
            )
        print()


class _Tee:
    """Writes to stdout and keeps a copy: the tables also go to the Markdown file."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def main() -> None:
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        args, results = run()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    header = (
        f"# `python bench/numpyro_overhead.py {' '.join(sys.argv[1:])}`\n\n"
        f"Protocol {PROTOCOL}, {results['model']}, batch {results['batch_size']}, {results['date']}; "
        f"{m['processor']} ({m['cpu_count']} CPUs), {m['device']}, jax {m['jax']}, numpyro {m['numpyro']}. "
        f"Raw numbers: `{args.out.name}`.\n\n"
    )
    args.out.with_suffix(".md").write_text(header + "".join(tee.parts))


def run():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed epochs per program (default 40)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up epochs per program (default 2)")
    parser.add_argument("--hlo", action="store_true", help="count the ops of the compiled programs too")
    parser.add_argument(
        "--variant-rounds",
        type=int,
        default=None,
        help="timed epochs per program in the --variants phase (default: --rounds)",
    )
    parser.add_argument(
        "--variants", action="store_true", help="also time ppvae with the candidate changes of VARIANTS (monkeypatched)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also profile this many epochs of each program with JAX's profiler and "
        "attribute XLA's per-operation times to categories",
    )
    parser.add_argument("--skip-timing", action="store_true", help="no timing rounds (with --profile/--hlo)")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=600.0,
        help="seconds to wait for a quiet machine before each round (default 600; 0: no wait)",
    )
    parser.add_argument(
        "--max-others-share",
        type=float,
        default=MAX_OTHERS_SHARE,
        help="a round during which other processes used more than this share of a core is "
        f"repeated (default {MAX_OTHERS_SHARE}; e.g. 100 accepts every round)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "numpyro_overhead.json")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_platforms", "cpu")
    from ppvae.spec.config import DataSpec
    from ppvae.data import load_dataset

    dataset = load_dataset(DataSpec(source="embedded"), "bernoulli", "unit_interval")
    assert dataset.train.shape[0] == 8000 and dataset.heldout.shape[0] == 2000 and dataset.binarize == "dynamic"
    n_train = dataset.train.shape[0]
    check = same_function_check(dataset)
    print(
        f"same function: max |ppvae - hand-written| on one batch: "
        f"meanfield {check['meanfield']['max_abs_diff']:.2e}, trace {check['trace']['max_abs_diff']:.2e}",
        file=sys.stderr,
    )
    cfg = ppvae_config("meanfield").train
    results = {
        "protocol": PROTOCOL,
        "model": "mlp-400 (models/mlp-400.toml), Z = 20, Bernoulli",
        "batch_size": cfg.batch_size,
        "train_images": n_train,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "warmup_epochs": args.warmup,
        "timed_epochs": args.rounds,
        "timing": "seconds per epoch: compiled scan over 62 batches of 128 + compiled step on the last 64 "
        "images, until the outputs are on the host; compilation excluded",
        "same_function_check": check,
    }

    with tempfile.TemporaryDirectory() as tmp:
        hand_mf = Hand(dataset.train, cfg.seed, cfg.batch_size, True, cfg.lr)
        hand_tr = Hand(dataset.train, cfg.seed, cfg.batch_size, False, cfg.lr)
        ppvae_mf = PPVAE(dataset, "meanfield", Path(tmp, "meanfield"))
        ppvae_tr = PPVAE(dataset, "trace", Path(tmp, "trace"))
        sides = [hand_mf, ppvae_mf, hand_tr, ppvae_tr]
        if args.skip_timing:
            for side in sides:
                side.run_epoch()  # compile
        phase = (
            None
            if args.skip_timing
            else measure(sides, args.rounds, args.warmup, "main", args.max_wait, args.max_others_share)
        )
        if phase is not None:
            ratios = {
                "meanfield (vs analytic-KL hand-written)": ratio(phase, ppvae_mf.name, hand_mf.name),
                "trace (vs sampled-KL hand-written)": ratio(phase, ppvae_tr.name, hand_tr.name),
                "trace (vs analytic-KL hand-written)": ratio(phase, ppvae_tr.name, hand_mf.name),
                "A/A control: hand-written sampled KL / analytic KL (same op count)": ratio(
                    phase, hand_tr.name, hand_mf.name
                ),
            }
            results["main"] = {**phase, "ratios": ratios}
            print_tables(phase, ratios, n_train)
        if args.hlo:
            results["hlo"] = hlo_report(sides)
            print(
                "| program | executed HLO ops, epoch program | of which fusions | while loops (scan + threefry) "
                "| ops in one scanned step | threefry loops in one step | executed HLO ops, rest step |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for name, entry in results["hlo"].items():
                e, s = entry.get("epoch", {}), entry.get("step", {})
                print(
                    f"| {name} | {e.get('executed_ops')} | {e['by_opcode'].get('fusion')} | "
                    f"{e['by_opcode'].get('while', 0)} | {e.get('ops_per_step')} | {e.get('while_loops_per_step')} | "
                    f"{s.get('executed_ops')} |"
                )
            print()

        profile_sides = list(sides)
        if args.profile:
            for i, variant in enumerate(CANDIDATES):
                profile_sides.append(PPVAE(dataset, "meanfield", Path(tmp, f"profiled{i}"), variant))
            results["profile"] = {
                s.name: profile_side(s, args.profile, Path(tmp, f"profile{i}")) for i, s in enumerate(profile_sides)
            }
            print_profile(results["profile"])

        if args.variants:
            variant_sides = [
                Hand(dataset.train, cfg.seed, cfg.batch_size, True, cfg.lr),
                PPVAE(dataset, "meanfield", Path(tmp, "v0")),
            ]
            for i, variant in enumerate(CANDIDATES):
                variant_sides.append(PPVAE(dataset, "meanfield", Path(tmp, f"v{i + 1}"), variant))
            variant_sides.append(PPVAE(dataset, "trace", Path(tmp, "vt"), ("prior-constant",)))
            variant_sides.append(Hand(dataset.train, cfg.seed, cfg.batch_size, False, cfg.lr))
            vphase = measure(
                variant_sides,
                args.variant_rounds or args.rounds,
                args.warmup,
                "variants",
                args.max_wait,
                args.max_others_share,
            )
            base = variant_sides[0].name
            vratios = {s.name: ratio(vphase, s.name, base) for s in variant_sides[1:-2]}
            vratios[variant_sides[-2].name + " (vs sampled-KL)"] = ratio(
                vphase, variant_sides[-2].name, variant_sides[-1].name
            )
            results["variants"] = {**vphase, "ratios": vratios, "descriptions": VARIANTS}
            if args.hlo:
                results["variants"]["hlo"] = hlo_report(variant_sides)
            print("Candidate changes (monkeypatched), interleaved with the hand-written epoch:")
            print_tables(vphase, vratios, n_train)

    return args, results


if __name__ == "__main__":
    main()
