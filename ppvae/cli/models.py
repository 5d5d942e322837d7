"""``ppvae models``: the ready-made specs and every registered component."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ppvae.cli.options import CONTEXT, json_option, with_plugins

__all__ = ["models"]


@click.command(context_settings=CONTEXT)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Folder of *.toml specs to list (default: models/ of the ppvae checkout, else ./models).",
)
@json_option("Print the specs and components as JSON.")
@with_plugins
def models(directory, as_json):
    """List the ready-made specs and every registered component.

    \b
    Specs: each *.toml in models/ (or --dir) with the first comment line of the file;
    train one with `ppvae fit models/NAME.toml`, and read the comments at the top of the
    file for what it is and what to expect. A spec that needs a plug-in names it.
    Components: every prior, likelihood, encoder and decoder per kind, the backends that
    have it ("both" marks a ppvae.Portable, written once for every backend) and one line
    about it. Components of plug-ins are listed once the plug-in is loaded (--plugin).

    \b
    Examples:
      ppvae models
      ppvae models --plugin models/plugins/student_t_prior.py
      ppvae models --dir my_specs --json
      ppvae fit models/beta-vae.toml --out runs/beta
    """
    from ppvae.spec import catalog

    specs = catalog.list_specs(directory)
    listing = catalog.list_components()
    from ppvae.spec.plugins import loaded_plugins

    if as_json:
        base = directory if directory is not None else catalog.default_models_dir()
        click.echo(
            json.dumps(
                {
                    "models_dir": None if base is None else str(base),
                    "specs": specs,
                    "components": listing["components"],
                    "unavailable_backends": listing["unavailable"],
                    "plugins": sorted(loaded_plugins()),
                },
                indent=2,
            )
        )
        return
    base = directory if directory is not None else catalog.default_models_dir()
    if base is None:
        click.echo("Specs: no models/ folder here (an installed ppvae ships none); point --dir at one.")
    else:
        shown = Path(base).resolve()
        if shown.is_relative_to(Path.cwd()):
            shown = shown.relative_to(Path.cwd())
        click.echo(f"Specs in {shown} (train one with: ppvae fit {shown / 'NAME.toml'}):")
        width = max([len(s["name"]) for s in specs] + [8])
        for s in specs:
            extra = f" [plug-in: {', '.join(s['plugins'])}]" if s.get("plugins") else ""
            click.echo(f"  {s['name']:<{width}}  {s['description']}{extra}")
        if not specs:
            click.echo("  (none)")
    click.echo("")
    click.echo("Components (backends that have each; both = a ppvae.Portable, written once):")
    rows = [r for kind_rows in listing["components"].values() for r in kind_rows]
    width = max([len(r["name"]) for r in rows] + [8])
    for kind, kind_rows in listing["components"].items():
        click.echo(f"  {kind}")
        for r in kind_rows:
            where = "both" if r["portable"] else ", ".join(r["backends"])
            click.echo(f"    {r['name']:<{width}}  {where:<13}  {r['description']}")
        if not kind_rows:
            click.echo("    (none registered)")
    for backend, reason in listing["unavailable"].items():
        click.echo(f"  ({backend} not installed: {reason})")
