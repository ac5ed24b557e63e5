"""A sharded seed sweep: several seeds of one configuration trained as one program over every
visible device (`gcnprune_jax.sharding.sweep`), timed against the same runs trained one after
another.

    GCNPRUNE_DATA_DIR=../shared/data python benchmarks/sweep_seeds.py --dataset sbu \
        --method magnitude --rate 0.9 --seeds 4 --epochs 60

Both paths train the same runs (SBU: all 5 folds of each seed) for the same epochs through
the same code (`sweep` of all seeds over the mesh, against `sweep` of one seed at a time on
one device); wall times include compilation (each path compiles once). Prints a Markdown
table and writes it (plus JSON) next to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from gcnprune_jax.config import default_config
from gcnprune_jax.data import load_dataset
from gcnprune_jax.sharding import device_mesh, seed_configs, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sbu", choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--method", default="magnitude")
    parser.add_argument("--rate", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=4, help="seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--no-alone", action="store_true", help="skip the one-after-another baseline"
    )
    parser.add_argument("--out", default="benchmarks/results/sweep_seeds")
    args = parser.parse_args()
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be at least 1")

    base = default_config(args.dataset, args.method)
    rate = 0.0 if args.method == "dense" else args.rate
    cfg = base.replace(
        method=args.method,
        target_rate=rate,
        train=dataclasses.replace(
            base.train, epochs=args.epochs, chunk_epochs=min(base.train.chunk_epochs, args.epochs)
        ),
    )
    dataset = load_dataset(cfg.dataset, None, seed=cfg.data_seed)
    configs = seed_configs(cfg, range(args.seeds))
    mesh = device_mesh()

    t0 = time.perf_counter()
    result = sweep(configs, dataset=dataset, mesh=mesh)
    jax.block_until_ready(result.states)
    sweep_s = time.perf_counter() - t0
    sweep_acc = [float(np.mean(a)) for a in result.test_accuracy]

    alone_s, alone_acc = None, None
    if not args.no_alone:
        alone_acc = []
        t0 = time.perf_counter()
        one = device_mesh(jax.devices()[:1])
        for c in configs:
            alone = sweep([c], dataset=dataset, mesh=one)
            jax.block_until_ready(alone.states)
            alone_acc.append(float(np.mean(alone.test_accuracy[0])))
        alone_s = time.perf_counter() - t0

    folds = len(cfg.folds)
    record = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "mesh_devices": int(mesh.devices.size),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "dataset": cfg.dataset,
        "method": cfg.method,
        "rate": rate,
        "seeds": args.seeds,
        "folds_per_seed": folds,
        "epochs": args.epochs,
        "sweep_s": sweep_s,
        "alone_s": alone_s,
        "speedup": None if alone_s is None else alone_s / sweep_s,
        "sweep_test_accuracy": sweep_acc,
        "alone_test_accuracy": alone_acc,
    }
    lines = [
        f"# Sharded seed sweep ({cfg.dataset}, {cfg.method} r={rate:g}, {args.seeds} seeds x "
        f"{folds} fold(s), {args.epochs} epochs)",
        "",
        f"Backend {record['backend']}, {record['mesh_devices']} device(s) in the mesh, jax "
        f"{jax.__version__}. Wall times include compilation.",
        "",
        "| path | wall s | runs/min | mean test accuracy per seed (%) |",
        "|---|---|---|---|",
        f"| sweep (one sharded program) | {sweep_s:.1f} | "
        f"{60 * args.seeds * folds / sweep_s:.1f} | "
        + " / ".join(f"{100 * a:.2f}" for a in sweep_acc)
        + " |",
    ]
    if alone_s is not None:
        lines.append(
            f"| one run at a time, one device | {alone_s:.1f} | "
            f"{60 * args.seeds * folds / alone_s:.1f} | "
            + " / ".join(f"{100 * a:.2f}" for a in alone_acc)
            + " |"
        )
        lines += ["", f"Speedup of the sweep: {alone_s / sweep_s:.2f}x."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(text + f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
