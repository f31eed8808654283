"""Print README.md's Keskar table (the top of the README) from a full `keskar` run's ``tables.md``.

The study prints its headline table as ``| run | test acc (%) | ε-sharpness | paper mode | λ_max | paper F1 test
acc | paper F1 ε-sharpness |`` with runs named ``F1 SB B=20``. The README shows the same cells, the run split
into network and run, and per network the better of SB and LB in bold for test accuracy (higher mean) and
ε-sharpness (lower mean). Nothing is recomputed: every cell is copied from the study's own output.

    python experiments/keskar_readme_table.py experiments/results/keskar/tables.md
"""

from __future__ import annotations

import sys
from pathlib import Path

HEADER = ("| network | run | test acc (%) | ε-sharpness | paper mode | λ_max | paper F1 (MNIST): test acc "
          "| paper F1 (MNIST): ε-sharpness |\n|---|---|---|---|---|---|---|---|")


def headline_rows(text: str) -> list[list[str]]:
    """The cells of the study's headline table (the first table after the line that starts with 'Headline')."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Headline"))
    rows = []
    for line in lines[start + 3:]:  # title, header, separator
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _mean(cell: str) -> float:
    return float(cell.split("±")[0].replace("†", "").strip())


def readme_table(text: str) -> str:
    rows = headline_rows(text)
    out = [HEADER]
    by_net: dict[str, list[list[str]]] = {}
    for row in rows:
        net, run = row[0].split(" ", 1)
        by_net.setdefault(net, []).append([net, run] + row[1:])
    for net, group in by_net.items():
        for col, best in ((2, max), (3, min)):  # test acc: higher is better; ε-sharpness: lower
            target = best(_mean(r[col]) for r in group)
            for r in group:
                if _mean(r[col]) == target:
                    r[col] = f"**{r[col]}**"
        out += ["| " + " | ".join(r) + " |" for r in group]
    return "\n".join(out)


if __name__ == "__main__":
    print(readme_table(Path(sys.argv[1]).read_text()))
