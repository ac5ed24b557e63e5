"""Each paper claim restated from the comparison grids' ledgers, the Pareto figure, the cost.

    python experiments/claims.py                       # the committed ledgers
    python experiments/claims.py --ledgers /path/dir   # {sbu,fpha}.jsonl elsewhere

Reads the cells of `experiments/configs/{sbu,fpha}.py` from their ledgers (the records the
tables of `compare.py` are drawn from; cells not run yet are reported as missing), and writes:
- `experiments/results/claims.md`: every claim of docs/methods.md per dataset and rate, as
  holds / does not hold with the numbers (test accuracy mean ± std over the seeds present,
  with their count), under the criteria stated at the top of the file; the goal of the
  comparison (the best learned method at least matches magnitude pruning at 0.98, 0.99 and
  0.995); the grid's measured cost per method (run time and wall time);
- `experiments/results/figures/pareto.png`: accuracy against structured FLOPs for every method,
  both datasets side by side, the Pareto front (no other cell both cheaper and more accurate)
  marked.
Only test accuracies of the grids' fixed settings (chosen on validation data) are read here;
nothing is tuned.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from compare import Ledger, group, load_config, mean_std, table_records

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATASETS = ("sbu", "fpha")
LEARNED = ("ctf", "ssp", "tcmp", "pmp", "mrmp")
HIGH = (0.98, 0.99, 0.995)
CLOSE = 2.0  # accuracy points: "close to"
FAR_LOWER = 0.5  # structured FLOPs ratio: "far lower"


def _cell(groups: dict, method: str, rate: float) -> dict[str, Any] | None:
    rs = groups.get((method, float(rate)), [])
    if not rs:
        return None
    acc, std = mean_std([100 * r["accuracy"] for r in rs])
    flops, _ = mean_std([r["flops_structured"] / r["flops_dense"] for r in rs])
    return {
        "acc": acc,
        "std": std,
        "n": len(rs),
        "flops": flops,
        "dangling": max(int(r["dangling_connections"]) for r in rs),
        "realized": max(abs(r["realized_rate"] - r["target_rate"]) for r in rs),
    }


def _fmt(c: dict[str, Any] | None) -> str:
    if c is None:
        return "missing"
    spread = "" if math.isnan(c["std"]) else f" ± {c['std']:.2f}"
    return f"{c['acc']:.2f}{spread} (n={c['n']})"


SEEDS = 3  # the grids' seeds: a verdict on fewer is marked provisional


def _verdict(ok: bool | None, *cells: dict[str, Any] | None) -> str:
    text = {True: "holds", False: "does not hold", None: "not yet measured"}[ok]
    if ok is not None and any(c is not None and c["n"] < SEEDS for c in cells):
        text += f" (so far: {min(c['n'] for c in cells if c is not None)} of {SEEDS} seeds)"
    return text


def claims(name: str, conf: dict[str, Any], groups: dict) -> list[str]:
    rates = [r for r in conf["rates"] if r > 0]
    lines = [f"## {name.upper()}", ""]

    def table(title: str, header: str, rows: list[str]) -> None:
        lines.extend([f"### {title}", "", header, "|" + "---|" * (header.count("|") - 1)])
        lines.extend(rows)
        lines.append("")

    header = (
        "| rate | CTF | magnitude (unstructured) | Δ acc | structured FLOPs, CTF / magnitude "
        "| verdict |"
    )
    rows = []
    for r in rates:
        c, m = _cell(groups, "ctf", r), _cell(groups, "magnitude", r)
        ok = None
        if c and m:
            ok = c["acc"] >= m["acc"] - CLOSE and c["flops"] <= FAR_LOWER * m["flops"]
        delta = f"{c['acc'] - m['acc']:+.2f}" if c and m else ""
        ratio = f"{c['flops']:.3f} / {m['flops']:.3f}" if c and m else ""
        rows.append(f"| {r:g} | {_fmt(c)} | {_fmt(m)} | {delta} | {ratio} | {_verdict(ok, c, m)} |")
    table(
        "CTF: close to unstructured accuracy at far lower structured FLOPs",
        header,
        rows,
    )

    header = "| rate | SSP | structured | magnitude | verdict |"
    rows = []
    for r in rates:
        s, st, m = (_cell(groups, k, r) for k in ("ssp", "structured", "magnitude"))
        ok = None if not (s and st and m) else s["acc"] > st["acc"] and s["acc"] > m["acc"]
        rows.append(f"| {r:g} | {_fmt(s)} | {_fmt(st)} | {_fmt(m)} | {_verdict(ok, s, st, m)} |")
    table("SSP: beats structured and unstructured pruning taken separately", header, rows)

    header = "| rate | TCMP | dangling (max over seeds) | magnitude | verdict |"
    rows = []
    for r in rates:
        t, m = _cell(groups, "tcmp", r), _cell(groups, "magnitude", r)
        ok = None
        if t and m:
            ok = t["dangling"] == 0 and (r not in HIGH or t["acc"] > m["acc"])
        dangling = "" if t is None else str(t["dangling"])
        rows.append(f"| {r:g} | {_fmt(t)} | {dangling} | {_fmt(m)} | {_verdict(ok, t, m)} |")
    table(
        "TCMP: no dangling connections, and better than magnitude pruning at very high rates "
        f"({', '.join(map(str, HIGH))})",
        header,
        rows,
    )

    header = "| rate | PMP | max abs(realized − target) | magnitude | verdict |"
    rows = []
    for r in rates:
        p, m = _cell(groups, "pmp", r), _cell(groups, "magnitude", r)
        ok = None
        if p and m:
            ok = p["realized"] < 1e-4 and (r not in HIGH or p["acc"] > m["acc"])
        realized = "" if p is None else f"{p['realized']:.1e}"
        rows.append(f"| {r:g} | {_fmt(p)} | {realized} | {_fmt(m)} | {_verdict(ok, p, m)} |")
    table(
        "PMP: any rate exactly, and better than magnitude pruning at very high rates", header, rows
    )

    header = "| rate | MRMP (one training) | PMP (one training per rate) | Δ acc | verdict |"
    rows = []
    for r in rates:
        mr, p = _cell(groups, "mrmp", r), _cell(groups, "pmp", r)
        ok = None if not (mr and p) else mr["acc"] >= p["acc"] - CLOSE
        delta = f"{mr['acc'] - p['acc']:+.2f}" if mr and p else ""
        rows.append(f"| {r:g} | {_fmt(mr)} | {_fmt(p)} | {delta} | {_verdict(ok, mr, p)} |")
    table("MRMP: one training serves every rate, close to single-rate training", header, rows)

    header = "| rate | best learned method | magnitude | verdict |"
    rows = []
    for r in HIGH:
        best = None
        for method in LEARNED:
            c = _cell(groups, method, r)
            if c and (best is None or c["acc"] > best[1]["acc"]):
                best = (method, c)
        m = _cell(groups, "magnitude", r)
        ok = None if not (best and m) else best[1]["acc"] >= m["acc"]
        label = "missing" if best is None else f"{best[0]} {_fmt(best[1])}"
        rows.append(f"| {r:g} | {label} | {_fmt(m)} | {_verdict(ok, best and best[1], m)} |")
    table("Goal: the best learned method at least matches magnitude pruning", header, rows)
    return lines


def cost(name: str, records: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"### {name.upper()}: measured cost per method",
        "",
        "| method | cells | run time (h) | wall time (h) | per cell (s) |",
        "|---|---|---|---|---|",
    ]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if "served_rate" in r and r.get("served_rate") is not None:
            continue  # an MRMP rate served from one training: no training time of its own
        by_method.setdefault(r["method"], []).append(r)
    for method, rs in by_method.items():
        run = sum(r.get("train_time_s", 0.0) for r in rs)
        wall = sum(r.get("wall_time_s", 0.0) for r in rs)
        per_cell = wall / len(rs)
        lines.append(
            f"| {method} | {len(rs)} | {run / 3600:.2f} | {wall / 3600:.2f} | {per_cell:.0f} |"
        )
    lines.append("")
    return lines


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point dominates (lower or equal FLOPs and higher accuracy), by
    increasing FLOPs."""
    front, best = [], -math.inf
    for flops, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((flops, acc))
            best = acc
    return front


def figure(data: dict[str, tuple[dict[str, Any], dict]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(matplotlib not installed: no figure; pip install '.[plots]')"
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4.5), squeeze=False)
    markers = "osD^v<>PX*"
    for ax, (name, (conf, groups)) in zip(axes[0], data.items(), strict=True):
        points = []
        for k, method in enumerate(conf["methods"]):
            xs, ys = [], []
            for rate in [0.0] if method == "dense" else conf["rates"]:
                c = _cell(groups, method, rate)
                if c is not None:
                    xs.append(c["flops"]), ys.append(c["acc"])
                    points.append((c["flops"], c["acc"]))
            if xs:
                ax.plot(xs, ys, marker=markers[k % len(markers)], ls="", label=method, alpha=0.8)
        front = pareto_front([p for p in points if p[0] > 0])
        if front:
            fx, fy = zip(*front, strict=True)
            ax.step(fx, fy, where="post", color="k", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("structured FLOPs / dense (compacted network, log scale)")
        ax.set_ylabel("test accuracy (%), mean over seeds")
        ax.set_title(f"{name.upper()}: accuracy against structured FLOPs")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ledgers", default=str(RESULTS / "ledger"), help="{sbu,fpha}.jsonl")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    results = Path(args.results)
    data, records_of = {}, {}
    for name in DATASETS:
        conf = load_config(str(HERE / "configs" / f"{name}.py"))
        records = table_records(conf, Ledger(Path(args.ledgers) / f"{conf['name']}.jsonl"))
        data[name], records_of[name] = (conf, group(records)), records
    total = {name: len(records_of[name]) for name in DATASETS}
    lines = [
        "# The papers' claims, restated from the comparison grids",
        "",
        "Generated by `python experiments/claims.py` from the ledgers "
        "`experiments/results/ledger/{sbu,fpha}.jsonl` (the cells of "
        "`experiments/configs/{sbu,fpha}.py`: every method with the settings chosen on "
        "validation data, seeds 0, 1, 2). Cells present: "
        + ", ".join(f"{n.upper()} {total[n]}" for n in DATASETS)
        + ". A claim is judged on the seeds present (n per cell); where cells are missing it "
        "is 'not yet measured'.",
        "",
        f"Criteria: 'close to' = mean test accuracy at most {CLOSE:g} points below; 'far lower "
        f"structured FLOPs' = at most {FAR_LOWER:g}× the other method's (`flops_structured` / "
        "`flops_dense`, the compacted network); 'better' = higher mean test accuracy; 'very "
        f"high rates' = {', '.join(map(str, HIGH))}; 'any rate' = realized rate within 1e-4 of "
        "the target.",
        "",
    ]
    for name in DATASETS:
        lines += claims(name, *data[name])
    lines += ["## Cost of the grids", ""]
    for name in DATASETS:
        lines += cost(name, records_of[name])
    written = figure(data, results / "figures" / "pareto.png")
    print(written)
    if written.startswith("wrote"):
        lines.append("![accuracy against structured FLOPs](figures/pareto.png)")
    lines.append("")
    out = results / "claims.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
