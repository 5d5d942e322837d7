"""What a run is made of: the Config and its sections, the registry of components, plug-in files and the catalog.

Plain Python: nothing here imports a framework. ``config`` reads, validates and writes a spec
(TOML); ``registry`` maps component names to their factories, per backend; ``plugins`` loads
the Python files that register user components; ``catalog`` lists the ready-made specs in
``models/`` and every registered component.
"""
