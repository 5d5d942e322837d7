"""The model layer shared by both backends: ``Portable`` distributions, guide families, class
labels of a conditional VAE, and the checks of network shapes and component settings.

Plain Python and numpy: each backend translates what is declared here into its framework.
"""
