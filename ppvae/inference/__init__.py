"""Inference without a framework: what every backend's trainer and evaluator share.

Backend-neutral (numpy and plain Python only): the table of estimators lives here, and
the backends translate each entry into their framework.
"""

from ppvae.inference.estimators import ESTIMATORS, Estimator, estimator, estimator_names

__all__ = ["ESTIMATORS", "Estimator", "estimator", "estimator_names"]
