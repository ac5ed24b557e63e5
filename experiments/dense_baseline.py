"""Dense accuracy of the default GCN on SBU (5-fold mean) and FPHA (official split), over
several seeds: the anchor every pruned network is compared with.

Each run is exactly `gcnprune train --dataset D --seed S --out runs/dense/D_sS` (defaults).
Run (about 20 minutes on 2 CPU cores):

    GCNPRUNE_DATA_DIR=../shared/data python experiments/dense_baseline.py --seeds 0,1,2

Writes experiments/results/dense.md; finished runs under --out are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from gcnprune_jax.config import default_config
from gcnprune_jax.runner import run_training

AUTHOR = {"sbu": 98.40, "fpha": 88.17}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default="sbu,fpha")
    parser.add_argument("--out", default="runs/dense")
    parser.add_argument("--table", default="experiments/results/dense.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = [
        "# Dense GCN accuracy (default settings)",
        "",
        "Each row: `gcnprune train --dataset D --seed S` with every other option at its "
        "default (see `gcnprune train --help` and `experiments/results/dense_ablation.md`). "
        "Accuracy at the last epoch; SBU is the mean over Yun et al.'s 5 folds, FPHA the "
        "official 600/575 split. Wall time on a 2-core CPU (loading, compilation, "
        "checkpoints and evaluation included).",
        "",
        "| dataset | seed | accuracy | per fold | epochs | wall s | params_digest |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for dataset in args.datasets.split(","):
        accuracies = []
        for seed in seeds:
            cfg = default_config(dataset).replace(seed=seed)
            out = Path(args.out) / f"{dataset}_s{seed}"
            result_file = out / "result.json"
            stored = json.loads(result_file.read_text()) if result_file.exists() else None
            if stored is not None and stored["config"] == json.loads(json.dumps(cfg.to_dict())):
                result = stored  # a finished run of exactly this config
            else:
                if stored is not None:
                    raise SystemExit(f"{out} holds a run of other settings; remove it first")
                result = run_training(cfg, out, resume=True)
            accuracies.append(100 * result["accuracy"])
            folds = " ".join(f"{a:.3f}" for a in result["fold_accuracies"])
            row = (
                f"| {dataset} | {seed} | {100 * result['accuracy']:.2f}% | {folds} | "
                f"{result['epochs']} | {result['wall_time_s']:.0f} | "
                f"`{result['params_digest'][:12]}` |"
            )
            print(row, flush=True)
            lines.append(row)
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        summary.append(
            f"| {dataset} | {statistics.mean(accuracies):.2f} ± {std:.2f}% | "
            f"{len(accuracies)} | {AUTHOR[dataset]:.2f}% |"
        )
    lines += [
        "",
        "| dataset | mean ± std | seeds | author's dense figure |",
        "|---|---|---|---|",
        *summary,
    ]
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(summary) - 3 :]))


if __name__ == "__main__":
    main()
