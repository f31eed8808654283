"""The printed side of a study: mean ± std cells, Markdown tables, budget marks, a report's numbers as a row."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ..numerics.stats import mean_std


def ran_out_mark(rows: Iterable[dict], key: str) -> str:
    """" †" when the maximizer behind ``key`` ran out of budget in any of ``rows`` (its mean is a lower bound)."""
    return " †" if any(r.get(f"{key}_ran_out") for r in rows) else ""


RAN_OUT_NOTE = "† the ε-sharpness maximizer's budget ran out in at least one seed: that mean is a lower bound."


def pm(values: Iterable[float | None] | float | None, digits: int = 2, *, scale: float = 1.0) -> str:
    """``"mean ± std"`` of ``values`` × ``scale`` with ``digits`` decimals (just the value for one; ``—`` for none).

    A nonzero mean that would print as zero at ``digits`` decimals is written in scientific notation instead
    (``1.2e-05 ± 3.0e-06``), so a tiny loss never reads as an exact 0.
    """
    if values is None or isinstance(values, (int, float)):
        values = [values]
    mean, std, n = mean_std(values)
    if n == 0:
        return "—"
    mean, std = mean * scale, std * scale
    spec = f".{digits}f" if mean == 0 or abs(mean) >= 0.5 * 10.0**-digits else ".1e"
    return f"{mean:{spec}}" if n == 1 else f"{mean:{spec}} ± {std:{spec}}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown pipe table with padded columns (readable on a terminal, pasteable into a README)."""
    cells = [[str(h) for h in header]] + [["—" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])


def report_numbers(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The scalars of a ``sharpness.report/1`` dict under flat names, for tables and figures.

    ``loss, accuracy, lambda_max, lambda_min, trace, trace_stderr, analysis_seconds``, and one key per
    measure present: ``eps_{full|random}_{ε:g}`` (Keskar ε-sharpness, %, by the default ascent;
    ``eps_paper_…`` by Keskar's L-BFGS-B protocol; ``…_ran_out`` whether its budget ran out), ``{adaptive|plain}_worst_{ρ:g}``
    and ``{adaptive|plain}_average_{ρ:g}`` (Andriushchenko et al. worst- and average-case sharpness).
    Quantities the report does not hold are None.
    """
    h = report.get("hessian") or {}
    top, bottom, trace = h.get("top") or {}, h.get("bottom") or {}, h.get("trace") or {}
    out: dict[str, float | None] = {
        "loss": report.get("loss"), "accuracy": report.get("accuracy"),
        "lambda_max": (top.get("values") or [None])[0], "lambda_min": (bottom.get("values") or [None])[0],
        "trace": trace.get("value"), "trace_stderr": trace.get("stderr"),
        "analysis_seconds": (report.get("cost") or {}).get("seconds"),
    }
    for e in report.get("epsilon_sharpness") or []:
        key = f"eps_{'paper_' if e.get('method') == 'paper' else ''}{e['space']}_{e['epsilon']:g}"
        out[key] = e["value"]
        out[f"{key}_ran_out"] = bool(e.get("budget_exhausted"))
    for kind, tag in (("adaptive_sharpness", "worst"), ("average_sharpness", "average")):
        for e in report.get(kind) or []:
            out[f"{'adaptive' if e['adaptive'] else 'plain'}_{tag}_{e['rho']:g}"] = e["value"]
    return out


def plural(n: int | float, word: str) -> str:
    """``"1 epoch"``, ``"30 epochs"``."""
    return f"{n:g} {word}{'' if n == 1 else 's'}"
