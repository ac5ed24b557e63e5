"""Dense against sparse inference of pruned networks, side by side (SPEC §8, issue 7).

For every trained run found under --runs (the output tree of experiments/pruning_table.py:
<runs>/<dataset>/<method>_r<rate>_s<seed>/), times the five paths of `gcnprune_jax.bench`
(masked dense, compacted dense, BCOO, compacted + BCOO, compacted with per-layer fastest
layouts; with --onnx also the masked and compacted networks in ONNX Runtime) at each batch
size on the current backend, fold 1 of each run, and reports the
measured speedup over the masked dense network next to the FLOP speedup (dense FLOPs / the
path's FLOPs). Runs unchanged on CPU, GPU and TPU: JAX picks the backend.

    GCNPRUNE_DATA_DIR=../shared/data python benchmarks/inference.py --dataset sbu \
        --runs /path/to/runs/table --out benchmarks/results/inference_sbu_cpu

Writes <out>.json, <out>.md and <out>.png (speedup against rate; needs matplotlib, skipped
with a note otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from gcnprune_jax.bench import bench_checkpoint, markdown_rows, markdown_stages

METHODS = ("magnitude", "structured", "ctf", "ssp", "tcmp")
RATES = (0.5, 0.9, 0.95, 0.98, 0.99)


def plot(results: list[dict], out: Path, batch: int) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(matplotlib not installed: no plot)"
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in results}):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["target_rate"])
        rates = [r["target_rate"] for r in rows]
        speed = [
            next(
                x["speedup"]
                for x in r["rows"]
                if x["path"] == "compact_auto" and x["batch"] == batch
            )
            for r in rows
        ]
        (line,) = ax.plot(rates, speed, marker="o", label=f"{method} measured")
        ax.plot(
            rates,
            [r["flop_ratio_compact"] for r in rows],
            linestyle="--",
            color=line.get_color(),
            label=f"{method} FLOP speedup",
        )
    ax.set_xlabel("pruning rate")
    ax.set_ylabel(f"speedup over masked dense (batch {batch})")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"compacted network, {jax.default_backend()}")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    return f"plot: {out.with_suffix('.png').name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="sbu")
    parser.add_argument("--runs", default="runs/table", help="experiments/pruning_table.py --out")
    parser.add_argument(
        "--tag", default="", help="subfolder suffix, e.g. _features.augment_copies-4"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--seed",
        default="0",
        help="seed of the runs to time; a comma-separated list takes, per method and rate, the "
        "first seed whose run exists (e.g. 1,0 on a partly filled grid)",
    )
    parser.add_argument("--out", default="benchmarks/results/inference")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also time the masked and compacted networks in ONNX Runtime (extra `onnx`)",
    )
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    root = Path(args.runs) / f"{args.dataset}{args.tag}"
    results, missing = [], []
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        for rate in (float(r) for r in args.rates.split(",")):
            found = [
                root / f"{method}_r{rate:g}_s{seed}"
                for seed in args.seed.split(",")
                if (root / f"{method}_r{rate:g}_s{seed}" / "result.json").is_file()
            ]
            if not found:
                missing.append(f"{method}_r{rate:g}_s{args.seed}")
                continue
            run_dir = found[0]
            res = bench_checkpoint(
                run_dir, batch_sizes=batch_sizes, repeats=args.repeats, onnx=args.onnx
            )
            results.append(res)
            big = max(batch_sizes)
            auto = next(r for r in res["rows"] if r["path"] == "compact_auto" and r["batch"] == big)
            print(
                f"{method:>10} r={rate:<5g} compact_auto speedup {auto['speedup']:.2f} at batch "
                f"{big} (FLOP speedup {res['flop_ratio_compact']:.2f}), layouts {res['layouts']}",
                flush=True,
            )
            write(out, args, results, missing, time.perf_counter() - started, batch_sizes)
    note = plot(results, out, max(batch_sizes)) if results else "no runs found"
    write(out, args, results, missing, time.perf_counter() - started, batch_sizes, note)
    print(f"wrote {out}.md / .json; {note}")


def write(out, args, results, missing, seconds, batch_sizes, note="") -> None:
    device = jax.devices()[0]
    big = max(batch_sizes)
    summary = [
        f"Compacted network (`compact_auto`) at batch {big}: measured speedup over the masked "
        "network against the structured FLOP speedup (flops_dense / flops_structured).",
        "",
        "| method | rate | flops_structured | compacted FLOPs | FLOP speedup | speedup | "
        "% of FLOP speedup | max rel. error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        auto = next(r for r in res["rows"] if r["path"] == "compact_auto" and r["batch"] == big)
        ratio = res["flop_ratio_structured"]
        # no FLOPs left (the input no longer reaches the logits): the network is a constant
        left = res["flops"]["structured"] > 0
        share = f"{100 * auto['speedup'] / ratio:.0f}%" if left else "–"
        summary.append(
            f"| {res['method']} | {res['target_rate']:g} | {res['flops']['structured']} | "
            f"{res['flops']['compact']} | {f'{ratio:.2f}' if left else '∞'} | "
            f"{auto['speedup']:.2f} | {share} | "
            f"{res['max_relative_error']['compact_auto']:.1e} |"
        )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"# Inference: masked dense against compacted and sparse ({args.dataset}, "
        f"{jax.default_backend()})",
        "",
        f"Device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{platform.processor() or platform.machine()}; fold 1 of each run; median of "
        f"{args.repeats} timing samples per cell, all paths timed in one process; "
        f"{cpus} CPU core(s) usable by the process, os.cpu_count() = {os.cpu_count()}. "
        "Command:",
        "",
        "```",
        (f"XLA_FLAGS={os.environ['XLA_FLAGS']} " if os.environ.get("XLA_FLAGS") else "")
        + f"GCNPRUNE_DATA_DIR=../shared/data python benchmarks/inference.py --dataset "
        f"{args.dataset} --runs {args.runs} --batch-sizes {','.join(map(str, batch_sizes))}"
        + (f" --tag {args.tag}" if args.tag else "")
        + f" --methods {args.methods} --rates {args.rates} --seed {args.seed}"
        + (" --onnx" if args.onnx else ""),
        "```",
        "",
        *summary,
        "",
        "`speedup` = time(masked_dense) / time(path) at the same batch; `FLOP speedup` = dense "
        "FLOPs / the path's FLOPs (unstructured count for the BCOO paths, the compacted "
        "network's for the compacted ones).",
        "",
        *markdown_rows(results),
        "",
        "Where the time goes: each stage of the compacted network run alone on the previous "
        "stage's output (ms per 1024 samples; the stages' sum exceeds the whole pass, which "
        "fuses them), on the whole batch at once and on one chunk of `batch_chunk` samples "
        "(how `apply_compact` runs a large batch).",
        "",
        *markdown_stages(results),
        "",
    ]
    lines.append(f"Runs timed: {', '.join(Path(r['source']).name for r in results)}.")
    if missing:
        lines.append(f"No run found (not benchmarked): {', '.join(missing)}.")
    lines.append(f"Total {seconds:.0f} s. {note}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
