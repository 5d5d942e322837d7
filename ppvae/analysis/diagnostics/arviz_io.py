"""Everything ppvae asks of ArviZ, in one place.

ppvae targets the ArviZ release the package registry offers (0.23.x, ``InferenceData``);
ArviZ 1.x replaces it with ``xarray.DataTree`` and moves the statistics to arviz-stats.
Keeping every ArviZ call here makes that move a change to this file alone.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["arviz", "inference_data", "write_netcdf", "read_netcdf", "psis_khat", "rhat_ess"]


def arviz():
    """Import ArviZ quietly (0.23 warns at import about the coming 1.x migration)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        import arviz as az
    return az


def inference_data(
    *,
    posterior: dict,
    posterior_predictive: dict,
    observed_data: dict,
    log_likelihood: dict,
    sample_stats: dict,
    dims: dict,
    coords: dict,
    attrs: dict[str, Any] | None = None,
):
    """Build an InferenceData from arrays shaped ``(chain, draw, ...)`` (observed: no chain/draw)."""
    az = arviz()
    return az.from_dict(
        posterior=posterior,
        posterior_predictive=posterior_predictive,
        observed_data=observed_data,
        log_likelihood=log_likelihood,
        sample_stats=sample_stats,
        dims=dims,
        coords=coords,
        attrs=attrs or {},
    )


def write_netcdf(idata, path: str | Path) -> None:
    """Write netCDF atomically (temporary file, then rename)."""
    from ppvae.runs.atomic import atomic_path

    with atomic_path(path, suffix=".nc") as tmp:
        idata.to_netcdf(str(tmp))


def read_netcdf(path: str | Path):
    """Read an InferenceData written by :func:`write_netcdf`."""
    return arviz().from_netcdf(str(path))


def psis_khat(log_weights: np.ndarray) -> np.ndarray:
    """Pareto k-hat of PSIS (Vehtari et al.) for every row of ``log_weights`` (n, S).

    Rows are importance ratios log p(x_i, z_s) - log q(z_s|x_i) over S draws from q(z|x_i);
    k-hat < 0.5 is good, 0.5-0.7 usable, > 0.7 unreliable (Yao et al. 2018).
    """
    az = arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ warns about every k-hat above 0.7; the report says it once
        _, khat = az.psislw(np.asarray(log_weights, dtype=np.float64), reff=1.0)
    return np.asarray(khat, dtype=np.float64)


def rhat_ess(draws: np.ndarray) -> dict[str, np.ndarray]:
    """R-hat (rank-normalized) and bulk/tail ESS per trailing index of ``draws`` (chain, draw, ...)."""
    az = arviz()
    ds = az.convert_to_dataset({"z": np.asarray(draws)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "rhat": np.asarray(az.rhat(ds)["z"].values),
            "ess_bulk": np.asarray(az.ess(ds, method="bulk")["z"].values),
            "ess_tail": np.asarray(az.ess(ds, method="tail")["z"].values),
        }
