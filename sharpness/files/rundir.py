"""Resumable run directories: a manifest, atomic files, and a record of which units of work are done.

A long job (a 2D loss grid, a sweep of training runs) writes into one directory::

    run/
      manifest.json        the job's configuration and the hashes of its inputs
      done/<key>           an empty marker per finished unit of work, written after the unit's files
      <name>.npz, .json    results, each written to a temporary file in the same directory and then renamed

Rerunning the job with the same manifest skips the units already marked done; a different manifest (other
arguments, other inputs) is refused with :class:`~sharpness.errors.InputError` rather than silently mixing two
jobs' results. A kill at any moment leaves every file either complete or absent (``os.replace`` is atomic on
POSIX and Windows within one file system), and a unit whose marker is missing is simply recomputed.

Example:
    >>> import tempfile
    >>> theta = np.zeros(3)
    >>> def compute_row(i):
    ...     return np.full(5, float(i))
    >>> tmp = tempfile.TemporaryDirectory()
    >>> manifest = {"kind": "plane", "grid": [5, 5], "theta": array_digest(theta)}
    >>> run = RunDir(f"{tmp.name}/plane", manifest)
    >>> for i in range(5):
    ...     if run.done(f"row-{i}"):
    ...         continue
    ...     _ = run.save_npz(f"row-{i}", loss=compute_row(i))
    ...     run.mark_done(f"row-{i}")
    >>> run.completed()
    ['row-0', 'row-1', 'row-2', 'row-3', 'row-4']
    >>> RunDir(f"{tmp.name}/plane", manifest).done("row-4")    # the same job again: it resumes, nothing left
    True
    >>> RunDir(f"{tmp.name}/plane", {**manifest, "grid": [9, 9]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sharpness.errors.InputError: ...plane holds a different run (manifest differs in: grid); ...
    >>> tmp.cleanup()
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .hashing import array_digest  # noqa: F401  (a manifest's input hash; importable from here, as before)

MANIFEST = "manifest.json"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary sibling, fsync it, then rename it into place.

    Readers (and a rerun after a kill) see either the old file, the complete new one, or nothing. The file gets
    the usual permissions (``0o666`` less the umask), and the directory is fsynced where the platform allows, so
    the rename survives a power cut too. This is the one atomic write of the package (run directories,
    checkpoints, ``.resume`` states, the tracker's CSV, figures).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename durable; not possible on every platform/filesystem
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def check_writable(out: str | os.PathLike, option: str | None = None) -> None:
    """Make sure a file can be written at ``out`` *before* the work that produces it starts: its directory is
    created if missing, and must be writable; ``out`` must not be a directory. ``option`` (``"--json"``) names
    the flag in the message. A check after an hour of analysis would throw the hour away."""
    what = f"{option} {os.fspath(out)}" if option else repr(os.fspath(out))
    directory = Path(out).expanduser().resolve().parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"expected a writable output directory for {what}, got {e.strerror or e} creating {str(directory)!r}") from None
    if Path(out).is_dir():
        raise InputError(f"expected an output file path for {what}, got a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"expected a writable output directory for {what}, got {str(directory)!r} (permission denied)")


def _canonical(obj: dict) -> dict:
    """The manifest as JSON will give it back (tuples → lists, keys as strings), so comparisons are fair."""
    try:
        return json.loads(json.dumps(obj, sort_keys=True, allow_nan=True))
    except TypeError as err:
        raise TypeError(f"a run manifest must be JSON-serializable: {err}") from None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        name = f"{prefix}{k}"
        if k not in old or k not in new:
            out.append(name)
        elif isinstance(old[k], dict) and isinstance(new[k], dict):
            out.extend(_differences(old[k], new[k], f"{name}."))
        elif old[k] != new[k]:
            out.append(name)
    return out


class RunDir:
    """A directory for one resumable job, bound to its manifest.

    Args:
        path: the directory; created (with parents) if missing.
        manifest: a JSON-serializable dict describing the job completely: its configuration and the digests
            of its inputs (see :func:`array_digest`). Written on first use; on later use it must be equal.

    Raises:
        InputError: the directory already holds a different job's manifest (the message names the keys that
            differ), or its manifest is unreadable.
    """

    def __init__(self, path: str | os.PathLike, manifest: dict) -> None:
        self.path = Path(path)
        self.manifest = _canonical(manifest)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "done").mkdir(exist_ok=True)
        existing = self.path / MANIFEST
        if existing.exists():
            try:
                old = json.loads(existing.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InputError(f"expected a JSON manifest in {existing}, got unreadable content ({err})") from None
            if old != self.manifest:
                diff = _differences(old, self.manifest) if isinstance(old, dict) else ["<root>"]
                shown = ", ".join(diff[:6]) + (", ..." if len(diff) > 6 else "")
                raise InputError(
                    f"{self.path} holds a different run (manifest differs in: {shown}); "
                    "expected the same arguments and inputs to resume, or use a new directory"
                )
        else:
            self.write_json(MANIFEST, self.manifest)

    # --- work units ------------------------------------------------------------------------------------
    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"expected a key of letters, digits, '.', '_' or '-' (not starting with a dot), got {key!r}")
        return key

    def done(self, key: str) -> bool:
        """Whether the unit ``key`` was marked finished."""
        return (self.path / "done" / self._check_key(key)).exists()

    def mark_done(self, key: str) -> None:
        """Mark ``key`` finished; call it only after the unit's files are written."""
        atomic_write(self.path / "done" / self._check_key(key), lambda fh: None)

    def completed(self) -> list[str]:
        """The keys marked done, sorted."""
        return sorted(p.name for p in (self.path / "done").iterdir() if not p.name.startswith("."))

    # --- files -----------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of a file in the run directory (``name`` is a plain file name, no directories)."""
        return self.path / self._check_key(name)

    def save_npz(self, name: str, **arrays: Any) -> Path:
        """Write ``<name>.npz`` atomically (numpy arrays or tensors; loaded back without pickle)."""
        plain = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in arrays.items()}
        return atomic_write(self.file(f"{name}.npz"), lambda fh: np.savez(fh, **plain))

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of ``<name>.npz`` as a dict (no pickle)."""
        with np.load(self.file(f"{name}.npz"), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` (give the extension) as indented, key-sorted JSON, atomically."""
        text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
        return atomic_write(self.file(name), lambda fh: fh.write(text.encode()))

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def files(self, pattern: str = "*") -> list[Path]:
        """Result files matching a glob, sorted (the manifest, markers and temporary files excluded)."""
        return sorted(
            p for p in self.path.glob(pattern) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
        )

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, {len(self.completed())} done)"
