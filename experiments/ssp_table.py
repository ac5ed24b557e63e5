"""SSP against its ablations and the baselines, from finished runs (issue 4's table).

Reads the run trees of experiments/pruning_table.py (default tree `runs/table`):
  <runs>/<dataset><tag>/<method>_r<rate>_s<seed>            magnitude, structured, ctf, ssp
  <runs>/<dataset><tag>_pruning.rank_beta-0/ssp_r<rate>_s<seed>   ssp without the rank term
and writes one Markdown table: accuracy and flops_structured / flops_dense per rate. CTF is
SSP's "no gating" ablation (its mask is the fixed Hadamard product of all granularities).

    python experiments/pruning_table.py --dataset sbu            # runs the rows
    python experiments/pruning_table.py --dataset sbu --methods ssp --set pruning.rank_beta=0
    python experiments/ssp_table.py --dataset sbu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = (
    ("magnitude (unstructured)", "", "magnitude"),
    ("structured (columns)", "", "structured"),
    ("ctf = ssp without gating", "", "ctf"),
    ("ssp", "", "ssp"),
    ("ssp without rank term (β = 0)", "_pruning.rank_beta-0", "ssp"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--tag", default="", help="e.g. _features.augment_copies-4")
    parser.add_argument("--runs", default="runs/table")
    parser.add_argument("--rates", default="0.5,0.9,0.95,0.98,0.99")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="default: experiments/results/<dataset>_ssp.md")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    lines = [
        f"# SSP on {args.dataset.upper()}: accuracy / structured FLOPs over dense",
        "",
        "Produced by `python experiments/ssp_table.py --dataset "
        f"{args.dataset}{' --tag ' + args.tag if args.tag else ''}` from the runs of "
        "`experiments/pruning_table.py` (commands in its docstring). Seed "
        f"{args.seed}; each cell: exported accuracy (%) / flops_structured ÷ flops_dense.",
        "",
        "| method | " + " | ".join(f"{r:g}" for r in rates) + " |",
        "|---|" + "---|" * len(rates),
    ]
    for label, suffix, method in ROWS:
        cells = []
        for rate in rates:
            path = (
                Path(args.runs)
                / f"{args.dataset}{args.tag}{suffix}"
                / f"{method}_r{rate:g}_s{args.seed}"
                / "result.json"
            )
            if not path.is_file():
                cells.append("not run")
                continue
            r = json.loads(path.read_text())
            ratio = r["flops_structured"] / r["flops_dense"]
            cells.append(f"{100 * r['accuracy']:.2f} / {ratio:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out = Path(args.out or f"experiments/results/{args.dataset}_ssp.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
