"""Every method at every rate over several seeds, from one config file (issue 8's tables).

    GCNPRUNE_DATA_DIR=../shared/data python experiments/compare.py experiments/configs/sbu.py
    ... experiments/configs/sbu.py --seeds 1,2 --methods ctf,ssp   # one part of the grid
    ... experiments/configs/sbu.py --report-only                   # tables and figures only

A config (experiments/configs/*.py) is a plain `config()` returning the dataset, overrides,
methods, rates, seeds, MRMP's training and serving rates and the mask pictures to draw.

Resume at three depths:
- the ledger experiments/results/ledger/<name>.jsonl, committed with the tables: one line per
  finished run (its result.json without the per-epoch history, plus the commit it ran at).
  A cell whose config the ledger already holds (equal up to options its method ignores) is
  not run again, on this machine or any other;
- finished run directories under --out (default runs/compare/<name>/) are read back;
- interrupted runs resume from their last checkpoint, ending with the uninterrupted result.

MRMP is trained once per seed on all its training rates (rates vmapped in the train step) and
served at each serving rate by an exact export (`gcnprune eval --rate R`), never retrained.

Writes experiments/results/<name>.md (mean ± std over seeds), <name>.csv (one row per run)
and figures in experiments/results/figures/ (matplotlib; skipped with a note without it):
accuracy against rate, against structured FLOPs and (with --latency, a JSON written by
benchmarks/inference.py) against measured latency; dangling connections against rate; and
the masks of the attention and convolution tensors, each diagonal block one channel, drawn
from the masks.npz of runs found under --out.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pruning_table import CSV_KEYS as TABLE_CSV_KEYS
from pruning_table import run_or_reuse, same_run, serve, with_overrides

from gcnprune_jax.config import RunConfig, default_config

RESULTS = Path(__file__).parent / "results"
# Bulky per-run fields left out of the ledger (they stay in each run's result.json).
_NOT_LEDGERED = ("history", "granularity", "fold_granularity", "granularity_overridden")
CSV_KEYS = (*TABLE_CSV_KEYS[:2], "seed", *TABLE_CSV_KEYS[2:], "source")


def load_config(path: str) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("experiment_config", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    conf = module.config()
    missing = {"name", "dataset", "methods", "rates", "seeds"} - set(conf)
    if missing:
        raise SystemExit(f"{path}: config() lacks {sorted(missing)}")
    conf.setdefault("set", [])
    return conf


def cell_config(conf: dict[str, Any], method: str, rate: float, seed: int) -> RunConfig:
    """The RunConfig of one table cell (for mrmp: its one training run of `seed`)."""
    cfg = default_config(conf["dataset"], method).replace(seed=seed)
    cfg = with_overrides(cfg, conf["set"]).replace(method=method, target_rate=rate)
    if method == "mrmp":
        rates = tuple(float(r) for r in conf["mrmp"]["train_rates"])
        cfg = with_overrides(cfg, [f"pruning.rates={json.dumps(list(rates))}"])
    return cfg


def cells(conf: dict[str, Any], methods, rates, seeds) -> Iterator[tuple[str, float, int]]:
    """(method, rate, seed) of the grid, seed-major so that a cut-short sweep leaves whole
    seeds; dense has one cell per seed (rate 0); mrmp one training per seed."""
    for seed in seeds:
        for method in methods:
            if method == "dense":
                yield method, 0.0, seed
            elif method == "mrmp":  # its own result.json is exported at 0.9 (multirate.py's)
                yield method, conf["mrmp"].get("export_rate", 0.9), seed
            else:
                for rate in rates:
                    yield method, rate, seed


class Ledger:
    """The committed record of finished runs: one JSON object per line, appended.

    Read from its file on every look-up, so several processes filling one grid (say one per
    core) see each other's finished runs and each writes tables that cover all of them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _ = self.records  # a malformed file fails here, before any training

    @property
    def records(self) -> list[dict[str, Any]]:
        records = []
        if self.path.exists():
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise SystemExit(f"{self.path}:{number}: not JSON ({err})") from err
        return records

    def find(self, cfg: RunConfig, served_rate: float | None = None) -> dict[str, Any] | None:
        for record in self.records:
            if record.get("served_rate") == served_rate and same_run(record["config"], cfg):
                return record
        return None

    def add(self, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
        record = {k: v for k, v in result.items() if k not in _NOT_LEDGERED}
        record.update(extra)
        record = json.loads(json.dumps(record))  # as read back: tuples become lists
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    """Where a run ran: digests are bit-reproducible only on the same CPU and XLA threading."""
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, "
        f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def run_cell(
    conf: dict[str, Any], ledger: Ledger, root: Path, method: str, rate: float, seed: int
) -> float:
    """Run (or reuse) one cell; returns the seconds spent training here (0 when reused)."""
    cfg = cell_config(conf, method, rate, seed)
    name = f"mrmp_s{seed}" if method == "mrmp" else f"{method}_r{rate:g}_s{seed}"
    out = root / name
    spent = 0.0
    trained = ledger.find(cfg)
    if trained is None:
        t0 = time.perf_counter()
        result = run_or_reuse(cfg, out)
        spent = time.perf_counter() - t0
        trained = ledger.add(result, source=f"run at {git_commit()}", **machine())
        print(
            f"{method:>10} r={rate:<5g} seed {seed}: {100 * result['accuracy']:.2f}%  "
            f"soft {result['soft_rate']:.4f}  dangling {result['dangling_connections']}  "
            f"{result['wall_time_s']:.0f} s",
            flush=True,
        )
    if method != "mrmp":
        return spent
    for served in conf["mrmp"]["serve_rates"]:
        if ledger.find(cfg, served_rate=served) is not None:
            continue
        if not (out / "checkpoint").is_dir():
            print(f"mrmp seed {seed}: ledgered but {out} is gone; cannot serve r={served:g}")
            continue
        result = serve(out, served)  # cached in the run directory, shared with multirate.py
        result["target_rate"] = served
        result["config"] = trained["config"]  # the one training's; its export rate is `served`
        ledger.add(
            result,
            served_rate=served,
            train_wall_time_s=trained["wall_time_s"],
            source=f"served at {git_commit()}",
        )
        print(f"      mrmp served r={served:g} seed {seed}: {100 * result['accuracy']:.2f}%")
    return spent


def table_records(conf: dict[str, Any], ledger: Ledger) -> list[dict[str, Any]]:
    """The ledger's records of this config's grid, one per (method, rate, seed), in order."""
    rows = []
    for method, rate, seed in cells(conf, conf["methods"], conf["rates"], conf["seeds"]):
        cfg = cell_config(conf, method, rate, seed)
        if method == "mrmp":
            rows += [
                r for s in conf["mrmp"]["serve_rates"] if (r := ledger.find(cfg, s)) is not None
            ]
        elif (record := ledger.find(cfg)) is not None:
            rows.append(record)
    return rows


def group(records: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], float(r["target_rate"])), []).append(r)
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def write_tables(
    conf: dict[str, Any], records: list[dict[str, Any]], command: str, results: Path
) -> Path:
    name, methods, rates = conf["name"], conf["methods"], conf["rates"]
    groups = group(records)
    seeds = conf["seeds"]

    def row(method: str, cell: Any) -> str:
        if method == "dense":
            return f"| dense | {cell(groups.get(('dense', 0.0), []))} |" + " |" * (len(rates) - 1)
        return (
            f"| {method} | " + " | ".join(cell(groups.get((method, r), [])) for r in rates) + " |"
        )

    def accuracy(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "—"
        mean, std = mean_std([100 * r["accuracy"] for r in rs])
        spread = f" ± {std:.2f}" if not math.isnan(std) else ""
        return f"{mean:.2f}{spread} ({len(rs)})"

    def flops(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "—"
        return f"{np.mean([r['flops_structured'] / r['flops_dense'] for r in rs]):.3f}"

    def dangling(rs: list[dict[str, Any]]) -> str:
        return "—" if not rs else str(max(int(r["dangling_connections"]) for r in rs))

    def soft(rs: list[dict[str, Any]]) -> str:
        values = [r["soft_rate"] for r in rs if r.get("served_rate") is None]
        return "—" if not values else f"{np.mean(values):.4f}"

    header = "| method | " + " | ".join(f"{r:g}" for r in rates) + " |"
    rule = "|---" * (len(rates) + 1) + "|"
    trained = [r for r in records if r.get("served_rate") is None]
    mrmp_train = {
        r["seed"]: r.get("train_wall_time_s", 0.0)
        for r in records
        if r.get("served_rate") is not None
    }
    total_s = sum(r["wall_time_s"] for r in trained) + sum(mrmp_train.values())
    folds = "5-fold mean (Yun et al.)" if conf["dataset"] == "sbu" else "official split"
    expected = sum(
        len(conf["mrmp"]["serve_rates"]) if m == "mrmp" else 1 if m == "dense" else len(rates)
        for m in methods
    ) * len(seeds)
    lines = [
        f"# {name.upper()}: every method against pruning rate, over seeds",
        "",
        "Produced by (reads and extends the ledger "
        f"[`ledger/{name}.jsonl`](ledger/{name}.jsonl); `--report-only` redraws without training):",
        "",
        "```",
        command,
        "```",
        "",
        f"Dataset `{conf['dataset']}`, {folds}, seeds {', '.join(map(str, seeds))}"
        + (f", overrides {', '.join(conf['set'])}" if conf["set"] else "")
        + f". {len(records)} of the grid's {expected} cells are in the ledger; each cell "
        "shows mean ± sample std over the seeds found and, in brackets, how many. Accuracy is "
        "the exported network's (crisp masks at exactly the target rate); mrmp is one training "
        "per seed served at each rate without retraining.",
        "",
        "## Accuracy (%)",
        "",
        header,
        rule,
        *[row(m, accuracy) for m in methods],
        "",
        "## Structured FLOPs / dense FLOPs (the compacted network, SPEC §8; mean over seeds)",
        "",
        header,
        rule,
        *[row(m, flops) for m in methods if m != "dense"],
        "",
        "## Dangling connections (largest over seeds and folds)",
        "",
        header,
        rule,
        *[row(m, dangling) for m in methods if m != "dense"],
        "",
        "## Soft rate at the end of training (mean over seeds; before the exact export)",
        "",
        header,
        rule,
        *[row(m, soft) for m in methods if m not in ("dense", "mrmp")],
        "",
        f"Cost: the {len(trained)} training runs in the ledger took {total_s:.0f} s of wall time "
        f"({total_s / 3600:.2f} h) on the machine that ran them (a 2-core CPU for every run "
        "so far), every step included; per-run times are in the CSV.",
        "",
    ]
    md = results / f"{name}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(lines))
    with md.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_KEYS)
        for r in records:
            writer.writerow([r.get(k, "") for k in CSV_KEYS])
    return md


def figures(
    conf: dict[str, Any],
    records: list[dict[str, Any]],
    root: Path,
    latency: str | None,
    results: Path,
) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(matplotlib not installed: no figures; pip install '.[plots]')"]
    name, groups = conf["name"], group(records)
    out_dir = results / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    pruned = [m for m in conf["methods"] if m != "dense"]
    dense = groups.get(("dense", 0.0), [])

    def x_of(rate: float) -> float:  # −log10(1 − r): 0.9 → 1, 0.99 → 2
        return -math.log10(1.0 - rate)

    def rate_axis(ax: Any) -> None:
        ax.set_xticks([x_of(r) for r in conf["rates"]], [f"{r:g}" for r in conf["rates"]])
        ax.set_xlabel("pruning rate (axis: −log10(1 − rate))")

    def series(method: str, key) -> tuple[list[float], list[float], list[float]]:
        xs, ms, ss = [], [], []
        for rate in conf["rates"]:
            rs = groups.get((method, float(rate)), [])
            if rs:
                mean, std = mean_std([key(r) for r in rs])
                xs.append(rate), ms.append(mean), ss.append(0.0 if math.isnan(std) else std)
        return xs, ms, ss

    def dense_line(ax: Any) -> None:
        if dense:
            mean = 100 * np.mean([r["accuracy"] for r in dense])
            ax.axhline(mean, color="k", ls=":", label="dense")

    def save(fig: Any, stem: str) -> None:
        path = out_dir / f"{name}_{stem}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in pruned:
        xs, ms, ss = series(method, lambda r: 100 * r["accuracy"])
        if xs:
            ax.errorbar([x_of(x) for x in xs], ms, yerr=ss, marker="o", capsize=3, label=method)
    dense_line(ax)
    rate_axis(ax)
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(f"{name.upper()}: accuracy against pruning rate")
    ax.legend(fontsize=8)
    save(fig, "accuracy_vs_rate")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in pruned:
        xs, ms, ss = series(method, lambda r: 100 * r["accuracy"])
        fl = [
            np.mean([r["flops_structured"] / r["flops_dense"] for r in groups[(method, float(x))]])
            for x in xs
        ]
        if xs:
            ax.errorbar(fl, ms, yerr=ss, marker="o", capsize=3, label=method)
    dense_line(ax)
    ax.set_xscale("log")
    ax.set_xlabel("structured FLOPs / dense FLOPs (compacted network)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{name.upper()}: accuracy against structured FLOPs (one point per rate)")
    ax.legend(fontsize=8)
    save(fig, "accuracy_vs_flops")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in pruned:
        xs, ms, _ = series(method, lambda r: float(r["dangling_connections"]))
        if xs:
            ax.plot([x_of(x) for x in xs], ms, marker="o", label=method)
    ax.set_yscale("symlog", linthresh=10)
    rate_axis(ax)
    ax.set_ylabel("dangling connections (mean over seeds)")
    ax.set_title(f"{name.upper()}: connections on no input→output path")
    ax.legend(fontsize=8)
    save(fig, "dangling_vs_rate")

    if latency:
        bench = json.loads(Path(latency).read_text())
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method in sorted({b["method"] for b in bench}):
            points = []
            for b in bench:
                rs = (
                    groups.get((method, float(b["target_rate"])), [])
                    if b["method"] == method
                    else []
                )
                lat = [x["latency_s"] for x in b["rows"] if x["path"] == "compact_auto"]
                if rs and lat:
                    acc = 100 * np.mean([r["accuracy"] for r in rs])
                    points.append((1e3 * max(lat), acc, b["target_rate"]))
            if points:
                xs, ys, _ = zip(*points, strict=True)
                ax.scatter(xs, ys, label=method)
                for x, y, rate in points:
                    ax.annotate(
                        f"{rate:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points"
                    )
        ax.set_xlabel("latency at the largest batch, compact_auto path (ms); labels: rate")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{name.upper()}: accuracy against measured latency ({Path(latency).name})")
        ax.legend(fontsize=8)
        save(fig, "accuracy_vs_latency")

    pictures = conf.get("mask_pictures")
    if pictures:
        written += mask_pictures(conf, pictures, root, plt, out_dir)
    return written


def block_diagonal(mask: np.ndarray) -> np.ndarray:
    """(G, I, O) → (G·I, G·O) with channel g as the g-th diagonal block (CTF paper, Fig. 2)."""
    g, i, o = mask.shape
    image = np.full((g * i, g * o), np.nan)
    for k in range(g):
        image[k * i : (k + 1) * i, k * o : (k + 1) * o] = mask[k]
    return image


def mask_pictures(
    conf: dict[str, Any], pictures: dict[str, Any], root: Path, plt: Any, out_dir: Path
) -> list[str]:
    methods, rates, seed = pictures["methods"], pictures["rates"], pictures["seed"]
    found = {}
    for method in methods:
        for rate in rates:
            path = root / f"{method}_r{rate:g}_s{seed}" / "masks.npz"
            if path.exists():
                with np.load(path) as npz:
                    found[(method, rate)] = {k: npz[k] for k in npz.files if npz[k].ndim == 3}
    if not found:
        return [f"(no masks.npz under {root} for the mask pictures)"]
    tensors = sorted(next(iter(found.values())))
    fig, axes = plt.subplots(
        len(methods),
        len(rates) * len(tensors),
        figsize=(1.6 * len(rates) * len(tensors), 1.9 * len(methods)),
        squeeze=False,
    )
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("#dde6f0")
    for i, method in enumerate(methods):
        for j, rate in enumerate(rates):
            for t, tensor in enumerate(tensors):
                ax = axes[i][j * len(tensors) + t]
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0 and t == 0:
                    ax.set_ylabel(method, fontsize=9)
                masks = found.get((method, rate))
                if masks is None:
                    ax.set_title(f"{tensor} r={rate:g}", fontsize=7)
                    ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=7)
                    continue
                kept = masks[tensor]
                ax.imshow(
                    block_diagonal(kept.astype(float)),
                    cmap=cmap,
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                    aspect="auto",
                )
                ax.set_title(f"{tensor} r={rate:g}\nkept {kept.mean():.1%}", fontsize=7)
    fig.suptitle(
        f"{conf['name'].upper()} seed {seed}, fold 1: kept entries (black) of the attention "
        "and convolution tensors, one diagonal block per channel (head)",
        fontsize=9,
    )
    path = out_dir / f"{conf['name']}_masks.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [str(path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="an experiments/configs/*.py file")
    parser.add_argument("--methods", help="run only these (comma-separated); default: all")
    parser.add_argument("--rates", help="run only these rates; default: the config's")
    parser.add_argument("--seeds", help="run only these seeds; default: the config's")
    parser.add_argument("--out", default="runs/compare", help="run directories go here")
    parser.add_argument("--results", default=str(RESULTS), help="tables, figures and ledger")
    parser.add_argument("--ledger", help="default: <results>/ledger/<name>.jsonl")
    parser.add_argument("--latency", help="a benchmarks/inference.py JSON for the latency plot")
    parser.add_argument("--report-only", action="store_true", help="write tables, train nothing")
    args = parser.parse_args()
    conf = load_config(args.config)
    results = Path(args.results)
    ledger = Ledger(Path(args.ledger or results / "ledger" / f"{conf['name']}.jsonl"))
    root = Path(args.out) / conf["name"]
    methods = args.methods.split(",") if args.methods else conf["methods"]
    rates = [float(r) for r in args.rates.split(",")] if args.rates else conf["rates"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else conf["seeds"]
    command = f"GCNPRUNE_DATA_DIR=../shared/data python experiments/compare.py {args.config}"

    started, spent = time.perf_counter(), 0.0
    if not args.report_only:
        for method, rate, seed in cells(conf, methods, rates, seeds):
            spent += run_cell(conf, ledger, root, method, rate, seed)
            write_tables(conf, table_records(conf, ledger), command, results)  # each run
    records = table_records(conf, ledger)
    print(f"wrote {write_tables(conf, records, command, results)}")
    for line in figures(conf, records, root, args.latency, results):
        print(line)
    print(f"this invocation: {time.perf_counter() - started:.0f} s ({spent:.0f} s training)")


if __name__ == "__main__":
    main()
