"""Data sources and preprocessing: everything between a data source and the arrays a backend trains on.

numpy only (no torch or jax), so that every backend shares one data pipeline.

Examples
--------
>>> from ppvae.spec.config import DataSpec
>>> from ppvae.data import load_dataset
>>> ds = load_dataset(DataSpec(source="embedded"), "bernoulli", "unit_interval")  # doctest: +SKIP
"""

from ppvae.data.arrays import read_array_file
from ppvae.data.dataset import Dataset
from ppvae.data.prepare import absolute_source, load_dataset, load_source, prepare_new
from ppvae.data.standard import STANDARD_DATASETS

__all__ = [
    "Dataset",
    "absolute_source",
    "load_dataset",
    "prepare_new",
    "load_source",
    "read_array_file",
    "STANDARD_DATASETS",
]
