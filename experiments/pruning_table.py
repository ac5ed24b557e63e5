"""Accuracy against pruning rate for dense, magnitude, structured and CTF (issue 3 tables).

Each row is one `gcnprune prune --dataset D --method M --rate R --seed S` run with the
dataset's defaults, plus the overrides given with --set (written into the table header, so
the table says exactly what ran). Finished runs under --out are reused (a run's result.json
must hold exactly this config); interrupted ones resume from their checkpoint.

    GCNPRUNE_DATA_DIR=../shared/data python experiments/pruning_table.py --dataset sbu
    GCNPRUNE_DATA_DIR=../shared/data python experiments/pruning_table.py --dataset fpha \\
        --set features.augment_copies=4

Writes experiments/results/<dataset>_seed<seed>.md (and .csv); experiments/compare.py makes
the multi-seed tables <dataset>.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from gcnprune_jax.config import PruningConfig, RunConfig, default_config
from gcnprune_jax.runner import evaluate_checkpoint, run_training

METHODS = ("dense", "magnitude", "structured", "ctf", "ssp")
RATES = (0.5, 0.9, 0.95, 0.98, 0.99)
# One CSV row per run (experiments/compare.py adds the seed and where each came from).
CSV_KEYS = (
    "method",
    "target_rate",
    "accuracy",
    "realized_rate",
    "soft_rate",
    "flops_dense",
    "flops_unstructured",
    "flops_structured",
    "dangling_connections",
    "wall_time_s",
    "params_digest",
)


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply "section.field=value" overrides (value parsed as JSON, else a string)."""
    for item in overrides:
        key, _, text = item.partition("=")
        section, _, name = key.partition(".")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, list):
            value = tuple(value)
        sub = getattr(cfg, section)
        cfg = cfg.replace(**{section: dataclasses.replace(sub, **{name: value})})
    return cfg


def same_run(stored: dict[str, Any], cfg: RunConfig) -> bool:
    """True when a stored config is this run's: equal everywhere except pruning options the
    method does not read (e.g. a magnitude run is the same whatever CTF's budget weight)."""
    current = json.loads(json.dumps(cfg.to_dict()))
    used = cfg.pruning.fields_used(cfg.method)
    # A field added after a run was recorded takes its dataclass default there: that default
    # is the behaviour the code had before the field existed (e.g. mu_end None, a constant μ).
    legacy = json.loads(json.dumps(dataclasses.asdict(PruningConfig())))

    def relevant(c: dict[str, Any]) -> dict[str, Any]:
        stored = c.get("pruning", {})
        return {**c, "pruning": {k: stored.get(k, legacy.get(k)) for k in used}}

    return relevant(stored) == relevant(current)


def serve(mrmp_dir: Path, rate: float) -> dict:
    """The MRMP run exported and evaluated at `rate` (`gcnprune eval --rate`), kept in
    <run>/served_r<rate>.json so that a later invocation (or a parallel one) reuses it."""
    cached = mrmp_dir / f"served_r{rate:g}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    result = evaluate_checkpoint(mrmp_dir, rate=rate)
    result.pop("history", None)
    cached.write_text(json.dumps(result) + "\n")
    # a tuning run (validation part held out) shows its validation accuracy, never the test's
    key, label = ("val_accuracy", "val") if "val_accuracy" in result else ("accuracy", "acc")
    print(f"mrmp served at r={rate:g}: {label} {100 * result[key]:.2f}%", flush=True)
    return result


def run_or_reuse(cfg: RunConfig, out: Path) -> dict[str, Any]:
    result_file = out / "result.json"
    if result_file.exists():
        stored = json.loads(result_file.read_text())
        if same_run(stored["config"], cfg):
            return stored
        raise SystemExit(f"{out} holds a run of other settings; remove it or use another --out")
    ckpt = out / "checkpoint"
    if ckpt.is_dir() and any(ckpt.iterdir()):
        from gcnprune_jax.checkpoint import Checkpointer

        saved = Checkpointer(ckpt).read_record()["config"]
        if not same_run(saved, cfg):
            raise SystemExit(f"{out} holds an unfinished run of other settings; remove it")
        cfg = RunConfig.from_dict(saved)  # resume it exactly as it was started
    return run_training(cfg, out, resume=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="section.field=value")
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--table", help="default: experiments/results/<dataset>_seed<seed>.md")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    table = Path(args.table or f"experiments/results/{args.dataset}_seed{args.seed}.md")
    base = with_overrides(default_config(args.dataset).replace(seed=args.seed), args.set)
    tag = "".join(f"_{s.replace('=', '-').replace(',', '-')}" for s in args.set)

    rows = []
    started = time.perf_counter()
    for method in args.methods.split(","):
        for rate in [0.0] if method == "dense" else rates:
            cfg = with_overrides(
                default_config(args.dataset, method).replace(seed=args.seed), args.set
            ).replace(method=method, target_rate=rate)
            out = Path(args.out) / f"{args.dataset}{tag}" / f"{method}_r{rate:g}_s{args.seed}"
            result = run_or_reuse(cfg, out)
            rows.append(result)
            print(
                f"{method:>10} r={rate:<5g} acc {100 * result['accuracy']:.2f}%  "
                f"realized {result['realized_rate']:.4f}  "
                f"structured FLOPs {result['flops_structured'] / result['flops_dense']:.3f}  "
                f"dangling {result['dangling_connections']}  {result['wall_time_s']:.0f} s",
                flush=True,
            )
            # Written after every run, so an interrupted sweep still leaves its table.
            write_table(table, args, base, rows, time.perf_counter() - started)
    print(f"wrote {table}")


def write_table(
    table: Path, args: argparse.Namespace, base: RunConfig, rows: list[dict], total_s: float
) -> None:
    command = "GCNPRUNE_DATA_DIR=../shared/data python experiments/pruning_table.py"
    command += f" --dataset {args.dataset}"
    if args.methods != ",".join(METHODS):
        command += f" --methods {args.methods}"
    if args.rates != ",".join(map(str, RATES)):
        command += f" --rates {args.rates}"
    command += "".join(f" --set {s}" for s in args.set)
    if args.seed:
        command += f" --seed {args.seed}"
    folds = "5-fold mean (Yun et al.)" if args.dataset == "sbu" else "official split"
    lines = [
        f"# {args.dataset.upper()}: accuracy against pruning rate",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Seed {args.seed}, {folds}, {base.train.epochs} epochs per run (magnitude and "
        f"structured: {base.pruning.prune_at:g} of them dense, then prune and fine-tune). "
        "Accuracy is the exported network's (crisp masks at exactly the target rate). "
        "`FLOPs s/d` = flops_structured / flops_dense (the compacted network), `FLOPs u/d` = "
        "flops_unstructured / flops_dense; `dangling` = kept connections on no input→output "
        "path (largest over folds). Wall time on a 2-core CPU, all included.",
        "",
        "| method | rate | accuracy | per fold | realized | soft | FLOPs s/d | FLOPs u/d "
        "| dangling | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_fold = " ".join(f"{a:.3f}" for a in r["fold_accuracies"])
        lines.append(
            f"| {r['method']} | {r['target_rate']:g} | {100 * r['accuracy']:.2f}% | {per_fold} "
            f"| {r['realized_rate']:.4f} | {r['soft_rate']:.4f} "
            f"| {r['flops_structured'] / r['flops_dense']:.3f} "
            f"| {r['flops_unstructured'] / r['flops_dense']:.3f} "
            f"| {r['dangling_connections']} | {r['wall_time_s']:.0f} |"
        )
    lines += ["", f"Total wall time of this invocation: {total_s:.0f} s (reused runs count 0)."]
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("\n".join(lines) + "\n")
    with table.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_KEYS)
        for r in rows:
            writer.writerow([r[k] for k in CSV_KEYS])


if __name__ == "__main__":
    main()
