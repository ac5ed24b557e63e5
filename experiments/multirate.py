"""PMP trained once per rate against MRMP trained once for all rates (issue 6 tables).

    GCNPRUNE_DATA_DIR=../shared/data python experiments/multirate.py --dataset sbu
    GCNPRUNE_DATA_DIR=../shared/data python experiments/multirate.py --dataset fpha \\
        --set features.augment_copies=4

PMP: one `gcnprune prune --method pmp --rate R` run per training rate. MRMP: one
`gcnprune prune --method mrmp --rate 0.9` run (trained on all rates of --rates at once),
then `gcnprune eval --checkpoint DIR --rate R` at every training rate and at rates it never
saw. Magnitude rows come from experiments/pruning_table.py runs under the same --out when
they exist. Writes experiments/results/<dataset>_multirate.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pruning_table import run_or_reuse, same_run, serve, with_overrides

from gcnprune_jax.config import RunConfig, default_config

TRAIN_RATES = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)
UNSEEN = (0.8, 0.93, 0.97)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="section.field=value")
    parser.add_argument(
        "--pmp-rates", default=",".join(map(str, TRAIN_RATES)), help="PMP's own runs"
    )
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--table", help="default: experiments/results/<dataset>_multirate.md")
    args = parser.parse_args()
    pmp_rates = [float(r) for r in args.pmp_rates.split(",")]
    table = Path(args.table or f"experiments/results/{args.dataset}_multirate.md")
    base = with_overrides(default_config(args.dataset).replace(seed=args.seed), args.set)
    tag = "".join(f"_{s.replace('=', '-').replace(',', '-')}" for s in args.set)
    root = Path(args.out) / f"{args.dataset}{tag}"

    started = time.perf_counter()
    # MRMP first (its one training serves every rate), then PMP from the highest rate down
    # (where the papers' claims are): a sweep cut short still leaves the informative rows.
    mrmp_cfg = method_config(args, "mrmp", 0.9)
    mrmp_cfg = with_overrides(mrmp_cfg, [f"pruning.rates={json.dumps(list(TRAIN_RATES))}"])
    mrmp_dir = root / f"mrmp_s{args.seed}"
    mrmp = run_or_reuse(mrmp_cfg, mrmp_dir)
    served = {rate: serve(mrmp_dir, rate) for rate in sorted(TRAIN_RATES + UNSEEN)}
    magnitude = magnitude_results(args, root)
    pmp: dict[float, dict] = {}
    write_table(table, args, base, mrmp, served, pmp, magnitude, started)

    def finished(rate: float) -> bool:
        return (root / f"pmp_r{rate:g}_s{args.seed}" / "result.json").exists()

    for rate in sorted(pmp_rates, key=lambda r: (not finished(r), -r)):
        cfg = method_config(args, "pmp", rate)
        pmp[rate] = run_or_reuse(cfg, root / f"pmp_r{rate:g}_s{args.seed}")
        print(f"pmp r={rate:g} acc {100 * pmp[rate]['accuracy']:.2f}%", flush=True)
        write_table(table, args, base, mrmp, served, pmp, magnitude, started)
    print(f"wrote {table}")


def magnitude_results(args: argparse.Namespace, root: Path) -> dict[float, dict]:
    """Magnitude pruning at the table's rates, same seed and settings: a run directory under
    --out, else the full comparison's ledger (experiments/results/ledger/<dataset>.jsonl)."""
    ledger = Path(__file__).parent / "results" / "ledger" / f"{args.dataset}.jsonl"
    records = []
    if ledger.exists():
        records = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    found = {}
    for rate in sorted(TRAIN_RATES + UNSEEN):
        result_file = root / f"magnitude_r{rate:g}_s{args.seed}" / "result.json"
        if result_file.exists():
            found[rate] = json.loads(result_file.read_text())
            continue
        cfg = method_config(args, "magnitude", rate)
        for record in records:
            if record.get("served_rate") is None and same_run(record["config"], cfg):
                found[rate] = record
                break
    return found


def method_config(args: argparse.Namespace, method: str, rate: float) -> RunConfig:
    """The dataset's defaults with `method`'s own pruning defaults (`config.method_defaults`,
    e.g. PMP's alignment ramp), then --set."""
    cfg = default_config(args.dataset, method).replace(seed=args.seed)
    return with_overrides(cfg, args.set).replace(method=method, target_rate=rate)


def alignment(args: argparse.Namespace, method: str) -> str:
    p = method_config(args, method, 0.9).pruning
    return f"μ = {p.mu:g}" if p.mu_end is None else f"μ ramped {p.mu:g} → {p.mu_end:g}"


def write_table(
    table: Path,
    args: argparse.Namespace,
    base: Any,
    mrmp: dict,
    served: dict[float, dict],
    pmp: dict[float, dict],
    magnitude: dict[float, dict],
    started: float,
) -> None:
    command = "GCNPRUNE_DATA_DIR=../shared/data python experiments/multirate.py"
    command += f" --dataset {args.dataset}" + "".join(f" --set {s}" for s in args.set)
    if args.pmp_rates != ",".join(map(str, TRAIN_RATES)):
        command += f" --pmp-rates {args.pmp_rates}"
    pmp_time = sum(r["wall_time_s"] for r in pmp.values())
    lines = [
        f"# {args.dataset.upper()}: PMP per rate against MRMP trained once",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Seed {args.seed}, {base.train.epochs} epochs per training run. MRMP trained once on "
        f"rates {', '.join(f'{r:g}' for r in TRAIN_RATES)} together, then served at every rate "
        "below by `gcnprune eval --rate R` (exact export at R, no retraining; rates marked * "
        "were never trained). Accuracy of the exported network (crisp masks, exactly R). "
        f"PMP's alignment weight: {alignment(args, 'pmp')}; MRMP's: {alignment(args, 'mrmp')}. "
        "Magnitude: a run under --out or the full comparison's ledger, same seed.",
        "",
        "| rate | PMP (own run) | MRMP (served) | magnitude | PMP soft rate "
        "| dangling PMP / MRMP |",
        "|---|---|---|---|---|---|",
    ]

    def pct(result: dict | None) -> str:
        return "—" if result is None else f"{100 * result['accuracy']:.2f}%"

    for rate in sorted(TRAIN_RATES + UNSEEN):
        mark = "*" if rate in UNSEEN else ""
        p = pmp.get(rate)
        soft = "—" if p is None else f"{p['soft_rate']:.4f}"
        dangling_pmp = "—" if p is None else str(p["dangling_connections"])
        lines.append(
            f"| {rate:g}{mark} | {pct(p)} | {pct(served[rate])} | {pct(magnitude.get(rate))} "
            f"| {soft} | {dangling_pmp} / {served[rate]['dangling_connections']} |"
        )
    lines += [
        "",
        f"Training time: PMP {len(pmp)} runs ({', '.join(f'{r:g}' for r in sorted(pmp))}), "
        f"{pmp_time:.0f} s in all; MRMP one run, "
        f"{mrmp['wall_time_s']:.0f} s (2-core CPU, everything included).",
        f"This invocation: {time.perf_counter() - started:.0f} s (reused runs count 0).",
    ]
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
