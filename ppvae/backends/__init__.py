"""Inference backends. Only these subpackages import torch/pyro (or jax/numpyro).

Load one by name with :func:`ppvae.spec.registry.load_backend`; a missing optional backend
gives an install hint instead of a traceback.
"""
