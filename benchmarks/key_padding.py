"""The compacted network with and without its padded attention keys, side by side.

`compact.CompactSpec.key_multiple` pads the attention's key axis (V nodes) to a multiple of 8
with exact zeros, so the CPU's softmax loops run on aligned rows. This times fold 1 of each
given run's compacted network (`compact_auto` of `gcnprune bench`) at one batch size with
`key_multiple` 1 (unpadded) and 8, alternating in one process over several rounds, next to
the masked network, and checks both against the masked logits.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false GCNPRUNE_DATA_DIR=../shared/data \\
        taskset -c 1 python benchmarks/key_padding.py runs/compare/sbu/ssp_r0.95_s1 ...

Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax.bench import build_paths, fold_networks, relative_error, tiled
from gcnprune_jax.compact import apply_compact, choose_layouts, time_call, with_layouts
from gcnprune_jax.runner import load_checkpoint


def bench_run(run_dir: str, batch: int, rounds: int, repeats: int) -> dict:
    run, state, _ = load_checkpoint(run_dir)
    net = fold_networks(run, state, [0])[0]
    x = net["x"]
    paths, auto, _, _, _ = build_paths(run, net["latent"], net["masks"], x)
    layouts, _ = choose_layouts(
        auto, run.model_dims["n_nodes"], run.cfg.features.n_features, batch=batch
    )
    auto = with_layouts(auto, layouts)
    xb = tiled(x, batch)
    adjacency = jnp.asarray(run.adjacency, jnp.float32)
    masked_fn, masked_params = paths["masked_dense"]
    reference = masked_fn(masked_params, xb)
    fns = {}
    for multiple in (1, 8):
        spec = dataclasses.replace(auto.spec, key_multiple=multiple)
        fns[multiple] = jax.jit(lambda p, xb, spec=spec: apply_compact(spec, p, xb, adjacency))
    errors = {m: relative_error(fn(auto.params, xb), reference) for m, fn in fns.items()}
    times: dict[str, list[float]] = {"masked": [], "keys_1": [], "keys_8": []}
    for _ in range(rounds):
        times["masked"].append(time_call(masked_fn, masked_params, xb, repeats=repeats))
        for multiple, fn in fns.items():
            times[f"keys_{multiple}"].append(time_call(fn, auto.params, xb, repeats=repeats))
    best = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "run": run_dir,
        "dataset": run.cfg.dataset,
        "method": run.cfg.method,
        "target_rate": run.cfg.target_rate,
        "attention": auto.spec.attention,
        "n_nodes": auto.spec.n_nodes,
        "batch": batch,
        "median_s": best,
        "rounds_s": times,
        "max_relative_error": {f"keys_{m}": e for m, e in errors.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (gcnprune prune --out)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/key_padding_cpu")
    args = parser.parse_args()
    results = []
    for run_dir in args.runs:
        res = bench_run(run_dir, args.batch, args.rounds, args.repeats)
        results.append(res)
        t = res["median_s"]
        print(
            f"{res['dataset']} {res['method']} r={res['target_rate']:g}: masked "
            f"{1e3 * t['masked']:.2f} ms, unpadded {1e3 * t['keys_1']:.2f} ms, padded "
            f"{1e3 * t['keys_8']:.2f} ms",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Compacted network: attention keys unpadded against padded to a multiple of 8",
        "",
        f"Backend {jax.default_backend()}, jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}; fold 1 of each run, batch {args.batch}; "
        f"median over {args.rounds} alternating rounds of the median of {args.repeats} calls. "
        "Command:",
        "",
        "```",
        "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false GCNPRUNE_DATA_DIR=../shared/data "
        f"taskset -c 1 python benchmarks/key_padding.py {' '.join(args.runs)} --batch "
        f"{args.batch} --rounds {args.rounds} --repeats {args.repeats}",
        "```",
        "",
        "| dataset | method | rate | attention | V | masked ms | unpadded ms | padded ms | "
        "padded / unpadded | max rel. error (padded) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        t = res["median_s"]
        lines.append(
            f"| {res['dataset']} | {res['method']} | {res['target_rate']:g} | "
            f"{res['attention']} | {res['n_nodes']} | {1e3 * t['masked']:.2f} | "
            f"{1e3 * t['keys_1']:.2f} | {1e3 * t['keys_8']:.2f} | "
            f"{t['keys_8'] / t['keys_1']:.2f} | {res['max_relative_error']['keys_8']:.1e} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md / .json")


if __name__ == "__main__":
    main()
