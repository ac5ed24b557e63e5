"""Dense-GCN input and design ablation on SBU (5-fold mean) and FPHA (official split).

Each variant changes one or two settings of the SPEC §7 baseline; every row is a real run.
Run (about 15 minutes on a 2-core CPU):

    GCNPRUNE_DATA_DIR=../shared/data python experiments/dense_ablation.py --epochs 300

Writes experiments/results/dense_ablation.md and one run directory per variant under --out
(finished runs are reused, so an interrupted sweep continues where it stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from gcnprune_jax.config import RunConfig
from gcnprune_jax.errors import CheckpointError
from gcnprune_jax.runner import run_training

# The SPEC §7 node signals exactly as written: raw coordinates, 4 chunk means, files' order.
SPEC_EXACT = {"center": "none", "person_order": "as_is"}

VARIANTS: dict[str, list[tuple[str, dict, dict, dict]]] = {
    # name, feature overrides, model overrides, train overrides
    "sbu": [
        ("SPEC §7 exact (raw coords, A/B as in files)", SPEC_EXACT, {}, {}),
        ("+ centre each sequence", {"person_order": "as_is"}, {}, {}),
        ("+ centre + actor first (default)", {}, {}, {}),
        ("+ velocities", {"velocities": True}, {}, {}),
        ("+ 8 chunks", {"chunks": 8}, {}, {}),
        ("per-feature standardization", {"standardize": "per_feature"}, {}, {}),
        ("attention: adjacency only", {}, {"attention": "adjacency"}, {}),
        ("attention: softmax only", {}, {"attention": "softmax"}, {}),
        ("dropout 0.5 (author: none)", {}, {"dropout": 0.5}, {}),
        ("weight decay 1e-2 (author: none)", {}, {}, {"weight_decay": 1e-2}),
    ],
    "fpha": [
        ("SPEC §7 exact (raw coords)", SPEC_EXACT, {}, {}),
        ("+ centre each sequence", {}, {}, {}),
        ("hand frame (wrist origin, palm axes)", {"center": "hand_frame"}, {}, {}),
        ("hand frame + velocities", {"center": "hand_frame", "velocities": True}, {}, {}),
        ("hand frame + 8 chunks", {"center": "hand_frame", "chunks": 8}, {}, {}),
        ("centre + velocities", {"velocities": True}, {}, {}),
        ("centre + 8 chunks", {"chunks": 8}, {}, {}),
        ("attention: adjacency only", {}, {"attention": "adjacency"}, {}),
        ("dropout 0.5 (author: none)", {}, {"dropout": 0.5}, {}),
        ("weight decay 1e-2 (author: none)", {}, {}, {"weight_decay": 1e-2}),
    ],
}


def variant_config(
    dataset: str, features: dict, model: dict, train: dict, epochs: int, seed: int
) -> RunConfig:
    base = RunConfig(dataset=dataset, seed=seed)
    return base.replace(
        features=dataclasses.replace(base.features, **features),
        model=dataclasses.replace(base.model, **model),
        train=dataclasses.replace(base.train, epochs=epochs, **train),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="sbu,fpha")
    parser.add_argument("--out", default="runs/dense_ablation")
    parser.add_argument("--table", default="experiments/results/dense_ablation.md")
    args = parser.parse_args()
    lines = [
        "# Dense GCN ablation",
        "",
        f"Command: `python experiments/dense_ablation.py --epochs {args.epochs} "
        f"--seed {args.seed}`. Accuracy at the last epoch (no early stopping); SBU is the "
        "5-fold mean, FPHA the official 600/575 split. One seed.",
        "",
        "| dataset | variant | accuracy | per fold | train s |",
        "|---|---|---|---|---|",
    ]
    for dataset in args.datasets.split(","):
        for i, (name, features, model, train) in enumerate(VARIANTS[dataset]):
            cfg = variant_config(dataset, features, model, train, args.epochs, args.seed)
            out = Path(args.out) / f"{dataset}_{i:02d}"
            result_file = out / "result.json"
            if result_file.exists():
                result = json.loads(result_file.read_text())
            else:
                try:
                    result = run_training(cfg, out, resume=True)
                except CheckpointError as err:
                    raise SystemExit(f"{out}: {err}") from err
            folds = " ".join(f"{a:.3f}" for a in result["fold_accuracies"])
            row = (
                f"| {dataset} | {name} | {100 * result['accuracy']:.2f}% | {folds} | "
                f"{result['train_time_s']:.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
