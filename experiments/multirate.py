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

from pruning_table import run_or_reuse, with_overrides

from gcnprune_jax.config import default_config
from gcnprune_jax.runner import evaluate_checkpoint

TRAIN_RATES = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)
UNSEEN = (0.8, 0.93, 0.97)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="section.field=value")
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--table", help="default: experiments/results/<dataset>_multirate.md")
    args = parser.parse_args()
    table = Path(args.table or f"experiments/results/{args.dataset}_multirate.md")
    base = with_overrides(default_config(args.dataset).replace(seed=args.seed), args.set)
    tag = "".join(f"_{s.replace('=', '-').replace(',', '-')}" for s in args.set)
    root = Path(args.out) / f"{args.dataset}{tag}"

    started = time.perf_counter()
    pmp = {}
    for rate in TRAIN_RATES:
        cfg = base.replace(method="pmp", target_rate=rate)
        pmp[rate] = run_or_reuse(cfg, root / f"pmp_r{rate:g}_s{args.seed}")
        print(f"pmp r={rate:g} acc {100 * pmp[rate]['accuracy']:.2f}%", flush=True)
    mrmp_cfg = base.replace(
        method="mrmp",
        target_rate=0.9,
        pruning=base.pruning.__class__(**{**base.pruning.__dict__, "rates": TRAIN_RATES}),
    )
    mrmp_dir = root / f"mrmp_s{args.seed}"
    mrmp = run_or_reuse(mrmp_cfg, mrmp_dir)
    served = {}
    for rate in sorted(TRAIN_RATES + UNSEEN):
        served[rate] = evaluate_checkpoint(mrmp_dir, rate=rate)
        print(f"mrmp served at r={rate:g}: acc {100 * served[rate]['accuracy']:.2f}%", flush=True)
    magnitude = {}
    for rate in sorted(TRAIN_RATES + UNSEEN):
        result_file = root / f"magnitude_r{rate:g}_s{args.seed}" / "result.json"
        if result_file.exists():
            magnitude[rate] = json.loads(result_file.read_text())

    command = "GCNPRUNE_DATA_DIR=../shared/data python experiments/multirate.py"
    command += f" --dataset {args.dataset}" + "".join(f" --set {s}" for s in args.set)
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
        "were never trained). Accuracy of the exported network (crisp masks, exactly R).",
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
        f"Training time: PMP {len(pmp)} runs, {pmp_time:.0f} s in all; MRMP one run, "
        f"{mrmp['wall_time_s']:.0f} s (2-core CPU, everything included).",
        f"This invocation: {time.perf_counter() - started:.0f} s (reused runs count 0).",
    ]
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")
    print(f"wrote {table}")


if __name__ == "__main__":
    main()
