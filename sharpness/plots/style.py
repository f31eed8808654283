"""The shipped style and byte-reproducible figure files (PNG/PDF/SVG written atomically, no dates)."""

from __future__ import annotations

import contextlib
import io
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..files.rundir import atomic_write


#: Fixed metadata per format so the same figure gives the same bytes (no dates, no version strings).
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": "sharpness", "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": "sharpness", "Date": None},
}


def style_path() -> Path:
    """The path of the shipped ``sharpness.mplstyle``."""
    return Path(str(resources.files("sharpness") / "sharpness.mplstyle"))


@contextlib.contextmanager
def use_style() -> Iterator[None]:
    """Context manager applying the shipped style to figures created inside it (rcParams restored after)."""
    with plt.style.context(str(style_path())):
        yield


def save_figure(fig: Figure, path_stem: str | Path, formats: Sequence[str] = ("png", "pdf"), *, dpi: float | None = None) -> list[Path]:
    """Write ``path_stem.<fmt>`` for each format, atomically and byte-reproducibly; returns the paths.

    PDF uses Type-42 (TrueType) fonts and no creation date; PNG carries no software string; SVG uses a fixed
    hash salt and no date. The same figure drawn from the same data gives identical bytes.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        if fmt not in _METADATA:
            raise ValueError(f"format must be one of {', '.join(_METADATA)}, got {fmt!r}")
        buf = io.BytesIO()
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "sharpness"}):
            fig.savefig(buf, format=fmt, metadata=_METADATA[fmt], dpi=dpi)
        data = buf.getvalue()
        written.append(atomic_write(stem.with_name(f"{stem.name}.{fmt}"), lambda fh: fh.write(data)))
    return written


def save_and_close(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (:func:`save_figure`) and free the figure."""
    try:
        return save_figure(fig, stem)
    finally:
        plt.close(fig)
