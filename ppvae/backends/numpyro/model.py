"""The VAE as a NumPyro model/guide pair, following the same contract as the Pyro backend.

Sites ``"z"`` and ``"x"`` sit in one plate ``"data"`` sized to the full dataset;
``handlers.scale(scale=beta)`` wraps ``"z"`` in both the model and the guide. The networks
and components are Equinox modules registered with ``eqx_module``, so their arrays are
NumPyro params that ``numpyro.infer.SVI`` (or ppvae's trainer) optimizes.

With stochastic layers above z (``model.latent_layers``, :mod:`ppvae.model.hierarchy`) the
sites are ``"z1"`` ... ``"zL"`` as in the Pyro backend: the model p(z_L) p(z_{L-1}|z_L) ...
p(x|z_1), the guide bottom-up q(z_1|x) q(z_2|z_1) ... or, with ``model.inference =
"ladder"``, the ladder's top-down guide (:meth:`VAE.ladder`), every latent site inside the β
scale in both. The networks between layers are parts ``"up1"``, ``"down1"``, ... (params
``"up1$params"`` ...); a one-layer VAE has none, so its params dict is unchanged.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.contrib.module import eqx_module
from numpyro.primitives import Messenger

from ppvae.model.conditioning import LabelledInputs
from ppvae.spec.config import ModelSpec
from ppvae.model.hierarchy import latent_sites, precision_weighted
from ppvae.spec.plan import build_parts
from ppvae.backends.numpyro import conditioning
from ppvae.backends.numpyro.guides import DiagonalGuide
from ppvae.model.priors import prior_distribution, uses_encoder

BACKEND = "numpyro"
PARTS = ("prior", "likelihood", "encoder", "decoder")


class _GivenSubsample(Messenger):
    """Hands the ``"data"`` plate its subsample indices (the batch rows, in order).

    Without it NumPyro would draw a random subsample of the whole dataset at every step
    (a shuffle of all N indices); the batch is already a subsample, so only the scale
    N / B is wanted.
    """

    def __init__(self, indices):
        self.indices = indices
        super().__init__()

    def process_message(self, msg):
        if msg["type"] == "plate" and msg["name"] == "data":
            msg["value"] = self.indices


def _has_params(module) -> bool:
    return bool(jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array)))


class VAE(LabelledInputs):
    """A VAE built from registered components (NumPyro backend).

    Parameters
    ----------
    prior, likelihood, encoder, decoder : equinox.Module
        Components with their initial parameters.
    event_shape : tuple of int
        Shape of one datapoint.
    latent_dim : int
        Size of z.
    dataset_size : int, optional
        Full dataset size N; a batch of B points is scaled by N / B.
    num_classes : int
        ``C > 0``: a conditional VAE; ``model`` and ``guide`` require integer labels ``y``
        and the networks receive ``one_hot(y)`` (see the Pyro backend's VAE). ``0``: unconditional.
    label_layout : {"flat", "channels"}
        How the label is attached to x for the encoder (see :mod:`ppvae.model.conditioning`).
    guide_family : equinox.Module, optional
        The family of q(z|x) (registry kind ``"guide"``), called with the encoder's outputs
        ``(loc, scale[, extra])``; default the diagonal Normal. Its part name is
        ``"guide"``, so a family with weights has params ``"guide$params"``.
    up, down : sequence of equinox.Module, optional
        A hierarchical VAE's networks between consecutive layers (z_l, z_{l+1}): the
        (loc, scale) of q(z_{l+1}|z_l) and of p(z_l|z_{l+1}), parts ``"up<l>"`` and
        ``"down<l>"``. ``prior`` is then p(z_L).
    inference : {"bottom_up", "ladder"}
        The guide of a hierarchical VAE (``model.inference``): bottom-up q(z_1|x)
        q(z_2|z_1) ..., or the ladder's top-down guide (:meth:`ladder`), which shares the
        model's ``"down<l>"`` networks. The model is the same for both.
    """

    labels = conditioning

    def __init__(
        self,
        prior,
        likelihood,
        encoder,
        decoder,
        event_shape,
        latent_dim,
        dataset_size=None,
        num_classes=0,
        label_layout="flat",
        guide_family=None,
        up=(),
        down=(),
        inference="bottom_up",
    ):
        if inference not in ("bottom_up", "ladder"):
            raise ValueError(f"inference must be 'bottom_up' or 'ladder', got {inference!r}")
        if len(up) != len(down):
            raise ValueError(
                f"a hierarchical VAE needs one up and one down network per pair of layers, got {len(up)} and {len(down)}"
            )
        self.modules = {
            "prior": prior,
            "likelihood": likelihood,
            "encoder": encoder,
            "decoder": decoder,
            "guide": DiagonalGuide(latent_dim) if guide_family is None else guide_family,
        }
        # Only a hierarchical VAE holds these: a one-layer VAE's params keep their names.
        for i, (net_up, net_down) in enumerate(zip(up, down), start=1):
            self.modules[f"up{i}"], self.modules[f"down{i}"] = net_up, net_down
        #: The latent sites, z_1 first: ``("z",)`` for one layer.
        self.sites = latent_sites(len(up) + 1)
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.dataset_size = dataset_size
        self.num_classes = int(num_classes)
        self.label_layout = label_layout
        self.inference = inference

    @property
    def hierarchical(self) -> bool:
        """Whether the VAE has stochastic layers above z (sites ``"z1"`` ... ``"zL"``)."""
        return len(self.sites) > 1

    @staticmethod
    def layer(net, z):
        """The diagonal Normal of a layer given the one next to it: ``net``'s (loc, scale) at ``z``."""
        loc, scale = net(z)[:2]
        return dist.Normal(loc, scale).to_event(1)

    def top_down(self, modules: dict, z_top, site):
        """z_1 from a draw of the top layer: each layer below drawn by ``site(i, distribution)``.

        ``i`` is the layer's index in :attr:`sites` (0 for z_1); ``modules`` holds the
        ``"down<l>"`` networks (registered parts or ``with_params(params)``). The identity
        for one layer.
        """
        z = z_top
        for i in reversed(range(len(self.sites) - 1)):
            z = site(i, self.layer(modules[f"down{i + 1}"], z))
        return z

    def bottom_up(self, modules: dict, loc):
        """Every layer's (loc, scale) above z_1, each q(z_{l+1}|z_l) taken at the loc of the layer below."""
        out = []
        for i in range(1, len(self.sites)):
            loc, scale = modules[f"up{i}"](loc)[:2]
            out.append((loc, scale))
        return out

    def ladder(self, modules: dict, loc, scale, site):
        """The ladder's top-down pass from the encoder's (loc, scale) of x; returns z_1.

        A deterministic bottom-up pass (:meth:`bottom_up`) gives every layer an estimate
        N(mu_hat_l, sigma_hat_l); z_L is drawn from its own, then each z_l from the
        precision-weighted product of its estimate with the model's p(z_l|z_{l+1}) at the
        draw above (Sønderby et al. 2016). Each layer is drawn by ``site(i, distribution)``
        as in :meth:`top_down`; ``modules`` holds the ``"up<l>"`` and ``"down<l>"`` networks.
        """
        estimates = [(loc, scale), *self.bottom_up(modules, loc)]
        top = len(self.sites) - 1
        z = site(top, dist.Normal(*estimates[top]).to_event(1))
        for i in reversed(range(top)):
            prior_loc, prior_scale = modules[f"down{i + 1}"](z)[:2]
            q_loc, q_scale = precision_weighted(*estimates[i], prior_loc, prior_scale, jnp.sqrt)
            z = site(i, dist.Normal(q_loc, q_scale).to_event(1))
        return z

    def posterior_layers(self, modules: dict, loc, scale) -> list:
        """Every layer's (loc, scale) of q, z_1 first, from the encoder's (loc, scale) of x.

        Bottom-up: each q(z_{l+1}|z_l) at the loc of the layer below. Ladder: the
        top-down pass of :meth:`ladder` with each z_{l+1} held at its loc. One pair for a
        one-layer VAE.
        """
        if self.inference != "ladder":
            return [(loc, scale), *self.bottom_up(modules, loc)]
        layers = {}

        def at_loc(i, fn):  # record the layer's Normal, go on from its loc
            layers[i] = (fn.base_dist.loc, fn.base_dist.scale)
            return fn.base_dist.loc

        self.ladder(modules, loc, scale, at_loc)
        return [layers[i] for i in range(len(self.sites))]

    # -- registration -------------------------------------------------------------------
    def _part(self, name: str):
        module = self.modules[name]
        return eqx_module(name, module) if _has_params(module) else module

    def with_params(self, params: dict) -> dict:
        """The modules with parameter values from a params dict (``"<part>$params"`` keys)."""
        out = {}
        for name, module in self.modules.items():
            key = f"{name}$params"
            out[name] = (
                eqx.combine(params[key], eqx.partition(module, eqx.is_inexact_array)[1]) if key in params else module
            )
        return out

    def posterior(self, modules: dict, x, y=None):
        """q(z|x) (q(z|x,y) when conditional) from ``modules``, e.g. ``with_params(params)``."""
        return modules["guide"](*modules["encoder"](self.encoder_input(x, y)))

    def _plate(self, x):
        batch = x.shape[0]
        size = self.dataset_size or batch
        with _GivenSubsample(jnp.arange(batch)):
            return numpyro.plate("data", size, subsample_size=batch, dim=-1)

    # -- the probabilistic program ----------------------------------------------------------------
    def _parts_named(self, prefix: str) -> dict:
        return {name: self._part(name) for name in self.modules if name.startswith(prefix)}

    def model(self, x, beta=1.0, *, y=None):
        """p(z) p(x|z) (p(x|z,y) given labels ``y`` when conditional), β around ``"z"``.

        A hierarchical VAE: p(z_L) ... p(z_1|z_2) p(x|z_1), β around every latent site.
        """
        self.check_labels(y)
        prior, likelihood, decoder = self._part("prior"), self._part("likelihood"), self._part("decoder")
        # The VampPrior shares the encoder's weights: the model registers them too.
        encoder = self._part("encoder") if uses_encoder(prior) else None
        down = self._parts_named("down")
        with self._plate(x):
            with handlers.scale(scale=beta):
                z = numpyro.sample(self.sites[-1], prior_distribution(prior, encoder))
                z = self.top_down(down, z, lambda i, fn: numpyro.sample(self.sites[i], fn))
            numpyro.sample("x", likelihood(decoder(self.decoder_input(z, y))), obs=x)
        return z

    def guide(self, x, beta=1.0, *, y=None):
        """q(z|x) (q(z|x,y) when conditional): the amortized encoder, β around ``"z"`` as in the model.

        A hierarchical VAE: q(z_1|x) q(z_2|z_1) ..., β around every latent site; returns z_1.
        A ladder VAE (``inference="ladder"``) draws top-down instead (:meth:`ladder`), z_L
        first, with the model's ``"down<l>"`` networks registered under the same names.
        """
        self.check_labels(y)
        encoder, family = self._part("encoder"), self._part("guide")
        up = self._parts_named("up")
        if self.inference == "ladder" and self.hierarchical:
            # plan_layers allows only the diagonal family here: the encoder's (loc, scale)
            # are mu_hat_1, sigma_hat_1 as they are.
            nets = {**up, **self._parts_named("down")}
            with self._plate(x):
                loc, scale = encoder(self.encoder_input(x, y))[:2]
                with handlers.scale(scale=beta):
                    return self.ladder(nets, loc, scale, lambda i, fn: numpyro.sample(self.sites[i], fn))
        with self._plate(x):
            q = family(*encoder(self.encoder_input(x, y)))
            with handlers.scale(scale=beta):
                z = first = numpyro.sample(self.sites[0], q)
                for i in range(1, len(self.sites)):  # bottom-up: q(z_{l+1} | z_l)
                    z = numpyro.sample(self.sites[i], self.layer(up[f"up{i}"], z))
                return first


def build_vae(spec: ModelSpec, event_shape, key, dataset_size: int | None = None) -> VAE:
    """Build a :class:`VAE` from a spec (see :func:`ppvae.spec.plan.build_parts`); ``key`` seeds the initial weights.

    A conditional spec gets the same enlarged networks as in the Pyro backend; a
    hierarchical one (``spec.latent_layers``) gets the networks ``"up<l>"`` and ``"down<l>"``
    between its layers, and the guide ``spec.inference`` names.
    """
    keys = dict(zip(PARTS, jax.random.split(key, len(PARTS))))
    # The guide family's key is folded in rather than split off: the other parts keep the
    # initial weights they had before guide families existed.
    keys["guide"] = jax.random.fold_in(key, len(PARTS))
    parts = build_parts(
        spec, event_shape, BACKEND, lambda part: {"key": keys[part] if part in keys else _layer_key(key, part)}
    )
    return VAE(
        parts.prior,
        parts.likelihood,
        parts.encoder,
        parts.decoder,
        event_shape,
        spec.latent_dim,
        dataset_size=dataset_size,
        num_classes=parts.num_classes,
        label_layout=parts.label_layout,
        guide_family=parts.guide_family,
        up=parts.up,
        down=parts.down,
        # A spec's plan always carries it; Parts built by hand may have no plan.
        inference=parts.layers.inference if parts.layers is not None else "bottom_up",
    )


def _layer_key(key, part: str):
    """The key of a network between layers (``"up<l>"`` / ``"down<l>"``), folded in from ``key``.

    Folded in, like the guide family's, rather than split off: the other parts keep the
    initial weights they have in a one-layer VAE. ``up`` and ``down`` fold in indices past
    the guide's, then the layer's number.
    """
    kind, layer = ("up", part[2:]) if part.startswith("up") else ("down", part[4:])
    branch = len(PARTS) + (1 if kind == "up" else 2)
    return jax.random.fold_in(jax.random.fold_in(key, branch), int(layer))


def initial_params(vae: VAE) -> dict:
    """The params dict (``"<part>$params"`` -> parameter pytree) of the initial modules."""
    return {
        f"{name}$params": eqx.filter(module, eqx.is_inexact_array)
        for name, module in vae.modules.items()
        if _has_params(module)
    }
