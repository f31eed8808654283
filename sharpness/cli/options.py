"""Options shared by several commands, and the small helpers that turn them into library arguments."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Callable

import click
import torch

from ..numerics.dtypes import DTYPES
from ..errors import InputError
from ..files.rundir import atomic_write, check_writable



def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device if there is one, else CPU; ``cuda[:i]`` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device expects auto, cpu or cuda[:i], got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type != "cpu":
        raise InputError(f"--device expects auto, cpu or cuda[:i], got {name!r}")
    return device


def parse_json_option(text: str | None, option: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} expects a JSON object, got {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} expects a JSON object, got {type(value).__name__}")
    return value


def progress_enabled(verbosity: int) -> bool:
    """Progress bars only for a person watching: stderr is a terminal and not ``-q``."""
    return verbosity >= 0 and sys.stderr.isatty()


def common_options(fn: Callable) -> Callable:
    """--device, --dtype, --seed, -v/-q on a command."""
    fn = click.option("-q", "--quiet", "quiet", count=True, help="Less output on stderr.")(fn)
    fn = click.option("-v", "--verbose", "verbose", count=True, help="More output on stderr.")(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")(fn)
    fn = click.option(
        "--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True,
        help="Floating type of the computation (float64 to check numbers).",
    )(fn)
    fn = click.option(
        "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:i.",
    )(fn)
    return fn


def threads_option(fn: Callable) -> Callable:
    """--threads N: torch intra-op threads for this command (default: torch's own choice, one per core)."""
    return click.option(
        "--threads", type=click.IntRange(min=1),
        help="Torch CPU threads [default: torch's, one per core]; 1 is often fastest for small models on a shared machine.",
    )(fn)


def tf32_option(fn: Callable) -> Callable:
    """--allow-tf32: let CUDA run float32 products in TF32 (off by default: ~1e-3 relative error per HVP)."""
    return click.option(
        "--allow-tf32", is_flag=True,
        help="Allow TF32 float32 matmuls/convolutions on CUDA (faster, ~1e-3 relative error); off by default.",
    )(fn)


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count for the running command and restore it when the command ends (the
    CLI also runs in-process, from tests and notebooks)."""
    if threads is None:
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    click.get_current_context().call_on_close(lambda: torch.set_num_threads(previous))


def setup_logging(verbose: int, quiet: int) -> int:
    level = verbose - quiet
    logging.basicConfig(
        level=logging.WARNING - 10 * level, format="sharpness: %(message)s", stream=sys.stderr, force=True
    )
    return level


def check_outputs(**paths: str | None) -> None:
    """Check every output file a command will write before it starts working: ``json_path="report.json"``
    checks ``--json report.json`` (``-`` is stdout and ``None`` not requested)."""
    for name, path in paths.items():
        if path and path != "-":
            check_writable(path, "--" + name.removesuffix("_path").replace("_", "-"))


def write_json(obj: Any, path: str) -> None:
    """Write JSON to ``path`` atomically, or to stdout for ``-``."""
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    if path == "-":
        click.echo(text, nl=False)
        return
    check_writable(path)
    atomic_write(path, lambda fh: fh.write(text.encode()))
