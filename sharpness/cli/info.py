"""``sharpness info CKPT``: what a checkpoint holds."""

from __future__ import annotations

import os

import click

from ..checkpoint import describe, load_checkpoint
from ..integrations.pretrained import describe_dir
from . import cli
from .options import check_outputs, write_json


def _scalar(value) -> str:
    """A value as a person reads it: ``—`` for none, ``yes``/``no`` for booleans (not Python's None/True)."""
    if value is None or (isinstance(value, (list, dict)) and not value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _lines(node, indent: int = 0):
    pad = "  " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)) and value:
                yield f"{pad}{key}:"
                yield from _lines(value, indent + 1)
            else:
                yield f"{pad}{key}: {_scalar(value)}"
    elif isinstance(node, list):
        for item in node[:20]:
            if isinstance(item, (dict, list)):
                yield f"{pad}-"
                yield from _lines(item, indent + 1)
            else:
                yield f"{pad}- {_scalar(item)}"
        if len(node) > 20:
            yield f"{pad}… {len(node) - 20} more"
    else:
        yield f"{pad}{_scalar(node)}"


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "json_path", metavar="PATH|-", help="Write the description as JSON ('-' for stdout).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Unpickle arbitrary objects from a torch.save file (a bare pickle.dump file is refused all the same). This RUNS CODE from the checkpoint: only for files you trust.")
def info(checkpoint: str, json_path: str | None, trust_checkpoint: bool) -> None:
    """Print what CHECKPOINT holds: model, parameters, data, training config, metrics, versions.

    CHECKPOINT may be a save_pretrained directory: its config.json and safetensors headers are read (no model is
    built)."""
    check_outputs(json_path=json_path)
    if os.path.isdir(checkpoint):
        description = describe_dir(checkpoint)
    else:
        description = describe(load_checkpoint(checkpoint, trust_checkpoint=trust_checkpoint))
    if json_path:
        write_json(description, json_path)
        if json_path == "-":
            return
    for line in _lines(description):
        click.echo(line)
