"""Print the README's result tables from the comparison ledgers (issue 22's grid).

    python experiments/readme_tables.py

For SBU and FPHA: test accuracy (%) of the exported network, mean ± sample std over the seeds
that every cell of the table has (so that every method is compared on the same seeds while the
grid is being filled), and structured FLOPs as a fraction of dense, at the rates the papers are
about. Reads only the ledgers; trains nothing.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from compare import Ledger, group, load_config, mean_std, table_records

HERE = Path(__file__).resolve().parent
RATES = (0.95, 0.98, 0.99, 0.995)


def table(name: str) -> str:
    conf = load_config(str(HERE / "configs" / f"{name}.py"))
    records = table_records(conf, Ledger(HERE / "results" / "ledger" / f"{name}.jsonl"))
    cells = [("dense", 0.0)] + [(m, r) for m in conf["methods"] if m != "dense" for r in RATES]
    found = group(records)
    seeds = [
        s
        for s in conf["seeds"]
        if all(any(r["seed"] == s for r in found.get(c, [])) for c in cells)
    ]
    groups = {c: [r for r in found.get(c, []) if r["seed"] in seeds] for c in cells}

    def accuracy(rs):
        if not rs:
            return "—"
        mean, std = mean_std([100 * r["accuracy"] for r in rs])
        return f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")

    def flops(rs):
        if not rs:
            return "—"
        return f"{np.mean([r['flops_structured'] / r['flops_dense'] for r in rs]):.3f}"

    head = "| method | " + " | ".join(f"acc. {r:g} | FLOPs {r:g}" for r in RATES) + " |"
    lines = [head, "|---" * (1 + 2 * len(RATES)) + "|"]
    for method in conf["methods"]:
        if method == "dense":
            continue
        cells = []
        for rate in RATES:
            rs = groups.get((method, rate), [])
            cells += [accuracy(rs), flops(rs)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    dense = accuracy(groups[("dense", 0.0)])
    return f"seeds {', '.join(map(str, seeds))}; dense: {dense}\n\n" + "\n".join(lines)


def main() -> None:
    for name in ("sbu", "fpha"):
        print(f"## {name}\n\n{table(name)}\n")


if __name__ == "__main__":
    main()
