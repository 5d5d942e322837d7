"""Pictures, written as PNG files in one house style.

``style`` holds the style (figures, fonts, margins, image tiles, the atomic PNG write) that every
other module here draws with; ``images`` (grids of samples and reconstructions), ``curves``
(training curves), ``latents`` (maps of the latent space), ``scores`` (anomaly scores),
``diagnostics`` (the pictures of ``ppvae diagnose``) and ``run_pictures`` (what ``ppvae fit``
draws for a run) are the pictures. The pictures a user asks for by name are re-exported here.
"""

from ppvae.plotting.curves import elbo_vs_time, loss_curves
from ppvae.plotting.images import image_grid, labelled_rows, reconstruction_grid, side_by_side, table_grid
from ppvae.plotting.latents import interpolation_strip, latent_scatter, plot_interpolation, plot_latent
from ppvae.plotting.scores import score_histograms
from ppvae.plotting.style import save_figure

__all__ = [
    "image_grid",
    "reconstruction_grid",
    "labelled_rows",
    "side_by_side",
    "table_grid",
    "loss_curves",
    "elbo_vs_time",
    "latent_scatter",
    "interpolation_strip",
    "plot_latent",
    "plot_interpolation",
    "score_histograms",
    "save_figure",
]
