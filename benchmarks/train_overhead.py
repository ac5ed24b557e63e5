"""Each pruning method's train-step time over the dense step's (docs/benchmarks.md; goals:
at most 1.3x for ctf, ssp, tcmp and pmp, and 1.3x per trained rate for mrmp), measured side by
side in one process.

For every method the same dataset, model and fold layout are compiled once, then a chunk of
--epochs epochs (one compiled `lax.scan`) is timed --repeats times, compilation excluded; the
ratio uses the best time of each. Methods run interleaved round by round, so drifting machine
load affects all of them alike.

    GCNPRUNE_DATA_DIR=../shared/data python benchmarks/train_overhead.py --dataset sbu

A method may carry settings, to compare variants in one run:
`--methods dense,pmp,pmp:alignment=wasserstein` (values parsed as Python literals when they
are, else kept as strings).

Writes a Markdown table and JSON next to --out.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax

from gcnprune_jax.config import default_config
from gcnprune_jax.data import load_dataset
from gcnprune_jax.runner import Run

METHODS = ("dense", "magnitude", "ctf", "ssp", "tcmp", "pmp", "mrmp")
GOALS = {"ctf": 1.3, "ssp": 1.3, "pmp": 1.3, "tcmp": 1.3, "mrmp": 1.3}


def parse_method(spec: str) -> tuple[str, dict]:
    """'pmp:alignment=wasserstein,mu=2' -> ('pmp', {'alignment': 'wasserstein', 'mu': 2})."""
    name, _, rest = spec.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value
    return name, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="sbu", choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.9)
    parser.add_argument("--out", default="benchmarks/results/train_overhead")
    args = parser.parse_args()

    ds = load_dataset(args.dataset, None)
    runs = {}
    specs: list[str] = []
    for token in args.methods.split(","):  # "pmp:a=1,b=2" keeps its settings together
        if "=" in token and ":" not in token and specs:
            specs[-1] += "," + token
        else:
            specs.append(token)
    for method in specs:
        name, settings = parse_method(method)
        rate = 0.0 if name == "dense" else args.rate
        cfg = default_config(args.dataset, name).replace(method=name, target_rate=rate)
        cfg = cfg.replace(pruning=dataclasses.replace(cfg.pruning, **settings))
        runs[method] = Run(cfg, ds)
        state, _ = runs[method].trainer.train_chunk(
            runs[method].initial_state, runs[method].data, args.epochs
        )
        jax.block_until_ready(state)  # compile and warm up
        print(f"compiled {method}", flush=True)
    best = {m: float("inf") for m in runs}
    for _ in range(args.repeats):
        for method, run in runs.items():
            t0 = time.perf_counter()
            state, metrics = run.trainer.train_chunk(run.initial_state, run.data, args.epochs)
            jax.block_until_ready((state, metrics))
            best[method] = min(best[method], time.perf_counter() - t0)
    dense = best.get("dense")
    rows = []
    for method, seconds in best.items():
        ratio = seconds / dense if dense else None
        name = parse_method(method)[0]
        if name == "mrmp" and ratio is not None:  # its goal is per trained rate
            ratio = ratio / len(runs[method].cfg.pruning.rates)
        goal = GOALS.get(name)
        rows.append(
            {
                "method": method,
                "seconds_per_epoch": seconds / args.epochs,
                "ratio_to_dense": ratio,
                "goal": goal,
                "meets_goal": None if goal is None or ratio is None else ratio <= goal,
            }
        )
    folds = len(next(iter(runs.values())).cfg.folds)
    header = (
        f"# Train-step overhead over dense ({args.dataset}, {folds} fold(s) vmapped, "
        f"rate {args.rate}, {args.epochs} epochs per timed chunk, best of {args.repeats})\n\n"
        f"Backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"jax {jax.__version__}, {platform.processor() or platform.machine()}. Command:\n\n"
        f"```\nGCNPRUNE_DATA_DIR=../shared/data python benchmarks/train_overhead.py "
        f"--dataset {args.dataset} --epochs {args.epochs} --repeats {args.repeats} "
        f"--methods '{args.methods}'\n```\n\n"
        "The ratio of mrmp is per trained rate (its step time over dense, divided by the number "
        "of rates).\n\n"
        "| method | s/epoch | x dense | goal | met |\n|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ratio = "" if r["ratio_to_dense"] is None else f"{r['ratio_to_dense']:.2f}"
        goal = "" if r["goal"] is None else f"{r['goal']:g}"
        met = "" if r["meets_goal"] is None else ("yes" if r["meets_goal"] else "no")
        lines.append(f"| {r['method']} | {r['seconds_per_epoch']:.4f} | {ratio} | {goal} | {met} |")
    text = header + "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    meta = {"dataset": args.dataset, "epochs": args.epochs, "backend": jax.default_backend()}
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
