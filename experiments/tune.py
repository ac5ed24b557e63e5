"""Choose each method's settings on validation data, never on the test split.

    GCNPRUNE_DATA_DIR=../shared/data python experiments/tune.py --dataset sbu --workers 2
    GCNPRUNE_DATA_DIR=../shared/data python experiments/tune.py --dataset fpha --workers 2

Every trial is one run that holds out a class-stratified 20% of the training split
(`--val-fraction 0.2`, the same sequences for every trial) and trains on the rest: SBU on
fold 1 only, FPHA with 4 augmented copies (instead of 16), seed 0, the dataset's other
defaults. A trial is a method at a rate with a variant of its settings (`VARIANTS`); MRMP
trains once per variant and is served at every tuned rate. For each method the variant with
the best mean validation accuracy over the tuned rates is chosen (ties: the first listed,
i.e. the current default).

The ledger (`experiments/results/tuning/<dataset>.jsonl`, one line per trial, appended as
trials finish, reused on the next invocation) holds validation figures and export
statistics only: test accuracy is deliberately not recorded, so nothing here can be chosen
on it. `experiments/results/tuning_<dataset>.md` is regenerated from the ledger.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import platform
import time
from pathlib import Path
from typing import Any

RATES = (0.95, 0.98, 0.99)
VAL_FRACTION = 0.2

# variant name -> "section.field=value" overrides (see pruning_table.with_overrides). The
# first variant of each method is the current default. zf: the zero-floor band-stop;
# ft: fine-tuning with the exported masks fixed for the last 30% of the epochs; k02: CTF's
# temperature and budget weight (κ_0 = 0.2, λ = 1e3) instead of TCMP's own (0.5, 3e3);
# global: one PMP prior over the whole network instead of one per tensor; bc: the budget
# controller (a trained common threshold factor that meets the budget); ft50: fine-tuning
# for the last 50% of the epochs (as magnitude pruning's prune_at = 0.5); ce: the consistent
# export (no budget spent on dangling connections); lr2: the learning-rate rule on the loss's
# temporal derivative (--schedule adaptive2); bin: PMP's alignment with ranks read from a
# histogram instead of a sort (alignment "wasserstein_binned").
_ZF = ["pruning.zero_floor=true"]
_FT = ["pruning.finetune=0.3"]
_K02 = ["pruning.kappa_start=0.2", "pruning.budget_lambda=1000.0"]
_GLOBAL = ['pruning.prior_scope="global"']
_BC = ["pruning.budget_control=true"]
_FT50 = ["pruning.finetune=0.5"]
_CE = ["pruning.consistent_export=true"]
_LR2 = ['train.schedule="adaptive2"']
_BIN = ['pruning.alignment="wasserstein_binned"']
VARIANTS: dict[str, dict[str, list[str]]] = {
    "dense": {"default": [], "lr2": _LR2},
    "magnitude": {"default": [], "lr2": _LR2},
    "ctf": {
        "default": [],
        "zf": _ZF,
        "ft": _FT,
        "zf+ft": _ZF + _FT,
        "zf+ce": _ZF + _CE,
        "zf+ce+ft": _ZF + _CE + _FT,
        "zf+bc": _ZF + _BC,
        "zf+bc+ft": _ZF + _BC + _FT,
    },
    "ssp": {
        "default": [],
        "zf": _ZF,
        "ft": _FT,
        "zf+ft": _ZF + _FT,
        "zf+bc+ft": _ZF + _BC + _FT,
        "bc+ft": _BC + _FT,
    },
    "tcmp": {
        "default": [],
        "zf": _ZF,
        "ft": _FT,
        "zf+ft": _ZF + _FT,
        "zf+k02": _ZF + _K02,
        "zf+k02+ft": _ZF + _K02 + _FT,
        "zf+bc": _ZF + _BC,
        "zf+bc+ft": _ZF + _BC + _FT,
        "zf+bc+ft50": _ZF + _BC + _FT50,
        "zf+bc+ft+lr2": _ZF + _BC + _FT + _LR2,
    },
    "pmp": {
        "default": [],
        "global": _GLOBAL,
        "ft": _FT,
        "global+ft": _GLOBAL + _FT,
        "global+ft50": _GLOBAL + _FT50,
        "global+ft+ce": _GLOBAL + _FT + _CE,
        "global+ft50+lr2": _GLOBAL + _FT50 + _LR2,
        "global+ft50+bin": _GLOBAL + _FT50 + _BIN,
        "global+ft50+bin+bc": _GLOBAL + _FT50 + _BIN + _BC,
        "global+ft50+bin+ce": _GLOBAL + _FT50 + _BIN + _CE,
    },
    "mrmp": {
        "default": [],
        "global": _GLOBAL,
        "global+bin": _GLOBAL + _BIN,
        "global+bin+ce": _GLOBAL + _BIN + _CE,
    },
}
# The consistent export is CTF's, PMP's and MRMP's default since it won on validation data
# (the `+ce` variants); their other named variants keep it off, so that a name means the same
# settings, and reruns reproduce the ledger's rows, whatever the defaults.
for _method in ("ctf", "pmp", "mrmp"):
    for _name, _overrides in VARIANTS[_method].items():
        if _name != "default" and "ce" not in _name.split("+"):
            VARIANTS[_method][_name] = [*_overrides, "pruning.consistent_export=false"]

# Variants of a setting every method shares (the training schedule): measured per method, but
# chosen for all methods at once (docs/methods.md), so never a single method's choice here.
SHARED_VARIANTS = {"lr2"}
# Methods whose variants were compared over more rates than RATES: CTF's two best variants tied
# over RATES, so both were run at every rate of the comparison grid and chosen over all six.
CHOICE_RATES = {"ctf": (0.5, 0.9, 0.95, 0.98, 0.99, 0.995)}
# What a tuning run changes from the dataset's defaults (cheaper, and never the test split).
DATASET_SETTINGS = {
    "sbu": {"fold": "1", "set": []},
    "fpha": {"fold": "all", "set": ["features.augment_copies=4"]},
}
LEDGER_KEYS = (
    "val_accuracy",
    "realized_rate",
    "soft_rate",
    "crisp_fraction",
    "rounding_changed",
    "params_kept",
    "flops_dense",
    "flops_structured",
    "dangling_connections",
    "train_time_s",
    "wall_time_s",
    "params_digest",
)


def trial_id(method: str, variant: str, rate: float) -> str:
    return f"{method}/{variant}/r{rate:g}"


def trials(
    methods: list[str], rates: tuple[float, ...], variants: set[str] | None = None
) -> list[dict[str, Any]]:
    """Every (method, variant, rate) to run; MRMP's trainings are listed once per variant
    (rate "train"), dense once (rate 0). variants: only these names (None: all)."""
    out = []
    for method in methods:
        for variant, overrides in VARIANTS[method].items():
            if variants is not None and variant not in variants:
                continue
            if method == "dense":
                out.append({"method": method, "variant": variant, "rate": 0.0, "set": overrides})
                continue
            if method == "mrmp":
                out.append({"method": method, "variant": variant, "rate": None, "set": overrides})
                continue
            for rate in rates:
                out.append({"method": method, "variant": variant, "rate": rate, "set": overrides})
    return out


def run_trial(
    dataset: str, trial: dict[str, Any], runs_dir: str, rates: tuple[float, ...]
) -> list[dict[str, Any]]:
    """One trial in this (worker) process; returns its ledger rows (MRMP: one per rate)."""
    from pruning_table import run_or_reuse, serve, with_overrides

    from gcnprune_jax.config import default_config

    method, variant = trial["method"], trial["variant"]
    settings = DATASET_SETTINGS[dataset]
    cfg = default_config(dataset, method)
    cfg = with_overrides(cfg, settings["set"] + trial["set"])
    train_rate = trial["rate"] if trial["rate"] is not None else max(rates)
    cfg = cfg.replace(
        method=method,
        target_rate=train_rate,
        fold=settings["fold"],
        seed=0,
        val_fraction=VAL_FRACTION,
    )
    tag = f"{method}_{variant}_r{train_rate:g}".replace("+", "-")
    out = Path(runs_dir) / dataset / tag
    t0 = time.perf_counter()
    result = run_or_reuse(cfg, out)
    rows = []
    served = [(r, serve(out, r)) for r in rates] if method == "mrmp" else [(train_rate, result)]
    for rate, res in served:
        row = {
            "id": trial_id(method, variant, rate),
            "method": method,
            "variant": variant,
            "rate": rate,
            "set": trial["set"],
            **{k: res.get(k) for k in LEDGER_KEYS},
            "trial_s": time.perf_counter() - t0,
            "backend": _backend(),
        }
        if method == "mrmp":
            row["train_time_s"] = result.get("train_time_s")
        rows.append(row)
    return rows


def _backend() -> str:
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', '')}"


def read_ledger(path: Path) -> dict[str, dict[str, Any]]:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    return rows


def append_rows(path: Path, rows: dict[str, dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Append `new` ledger rows to the ledger file at `path` and to `rows` (keyed by id)."""
    with path.open("a") as f:
        for row in new:
            f.write(json.dumps(row) + "\n")
            rows[row["id"]] = row


def choose(rows: dict[str, dict[str, Any]], rates: tuple[float, ...]) -> dict[str, str]:
    """Per method, the variant of best mean validation accuracy over `rates` (variants with
    a missing rate are not eligible; ties go to the first listed)."""
    chosen = {}
    for method, variants in VARIANTS.items():
        best, best_score = None, -1.0
        for variant in variants:
            if any(part in SHARED_VARIANTS for part in variant.split("+")):
                continue
            wanted = [0.0] if method == "dense" else list(CHOICE_RATES.get(method, rates))
            accs = [rows.get(trial_id(method, variant, r), {}).get("val_accuracy") for r in wanted]
            if not accs or any(a is None for a in accs):
                continue
            score = sum(accs) / len(accs)
            if score > best_score + 1e-6:  # a tie keeps the earlier variant
                best, best_score = variant, score
        if best is not None:
            chosen[method] = best
    return chosen


def combined_choice(results: Path, rates: tuple[float, ...]) -> dict[str, tuple[str, float]]:
    """Per method, the variant of best mean validation accuracy over both datasets and
    `rates` (only variants measured on both at every rate; ties keep the earlier variant):
    the library's defaults follow this choice. {method: (variant, mean)}."""
    ledgers = [read_ledger(results / "tuning" / f"{d}.jsonl") for d in DATASET_SETTINGS]
    chosen = {}
    for method, variants in VARIANTS.items():
        wanted = [0.0] if method == "dense" else list(CHOICE_RATES.get(method, rates))
        best, best_score = None, -1.0
        for variant in variants:
            if any(part in SHARED_VARIANTS for part in variant.split("+")):
                continue
            accs = [
                rows.get(trial_id(method, variant, r), {}).get("val_accuracy")
                for rows in ledgers
                for r in wanted
            ]
            if not accs or any(a is None for a in accs):
                continue
            score = sum(accs) / len(accs)
            if score > best_score + 1e-6:
                best, best_score = variant, score
        if best is not None:
            chosen[method] = (best, best_score)
    return chosen


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def write_report(dataset: str, rows: dict[str, dict[str, Any]], path: Path, command: str):
    rates = sorted({r["rate"] for r in rows.values() if r["rate"]})
    chosen = choose(rows, tuple(r for r in RATES if r in rates))
    backends = sorted({r.get("backend", "?") for r in rows.values()})
    s = DATASET_SETTINGS[dataset]
    split = f"fold {s['fold']}" if dataset == "sbu" else "the official split"
    lines = [
        f"# Tuning on validation data: {dataset.upper()}",
        "",
        f"Generated by `{command}` from `experiments/results/tuning/{dataset}.jsonl` "
        f"({len(rows)} trials; backend {', '.join(backends)}).",
        "",
        f"Every trial holds out a class-stratified {VAL_FRACTION:.0%} of the training split "
        f"as validation data and trains on the rest ({split}"
        f"{', ' + ', '.join(s['set']) if s['set'] else ''}; seed 0). The figures are "
        "validation accuracy (%); test accuracy is not recorded here. A method's variant is "
        "chosen by its mean validation accuracy over the tuned rates.",
        "",
        "Variants: `zf` zero-floor band-stop, `ft` fine-tuning with the exported masks fixed "
        "(last 30% of the epochs), `k02` κ_0 = 0.2 and λ = 1e3, `global` one PMP prior over "
        "the whole network, `bc` the budget controller, `ft50` fine-tuning for the last 50%, "
        "`ce` the consistent export, `lr2` the learning-rate rule on the loss's temporal "
        "derivative.",
        "",
        "| method | variant | " + " | ".join(f"val @ {r:g}" for r in rates) + " | mean | "
        "soft rate (per rate) | crisp fraction | rounding changed | structured FLOPs / dense | "
        "dangling | chosen |",
        "|" + "---|" * (len(rates) + 9),
    ]
    for method, variants in VARIANTS.items():
        for variant in variants:
            wanted = [0.0] if method == "dense" else rates
            cells = [rows.get(trial_id(method, variant, r)) for r in wanted]
            if not any(cells):
                continue
            accs = [c.get("val_accuracy") if c else None for c in cells]
            got = [a for a in accs if a is not None]
            mean = sum(got) / len(got) if len(got) == len(accs) else None

            def col(key, fmt, cells=cells):
                return " / ".join(
                    fmt(c.get(key)) if c and c.get(key) is not None else "–" for c in cells
                )

            acc_cells = [_pct(a) for a in accs]
            if method == "dense":
                acc_cells = [_pct(accs[0])] + [""] * (len(rates) - 1)
            lines.append(
                f"| {method} | {variant} | "
                + " | ".join(acc_cells)
                + f" | {_pct(mean)} | {col('soft_rate', lambda v: f'{v:.4f}')} | "
                f"{col('crisp_fraction', lambda v: f'{v:.4f}')} | "
                f"{col('rounding_changed', str)} | "
                + " / ".join(
                    f"{c['flops_structured'] / c['flops_dense']:.3f}"
                    if c and c.get("flops_dense")
                    else "–"
                    for c in cells
                )
                + f" | {col('dangling_connections', str)} | "
                + ("**yes**" if chosen.get(method) == variant else "")
                + " |"
            )
    lines += ["", "Chosen on this dataset: " + ", ".join(f"{m} `{v}`" for m, v in chosen.items())]
    both = combined_choice(path.parent, tuple(r for r in RATES if r in rates))
    lines += [
        "",
        "Chosen over both datasets (mean validation accuracy over SBU and FPHA at every tuned "
        "rate, for CTF at every rate of the comparison grid, 0.5 to 0.995; the library's "
        "per-method defaults follow this choice; `lr2`, a training "
        "setting every method shares, is decided over all methods in docs/methods.md): "
        + ", ".join(f"{m} `{v}` ({100 * score:.2f})" for m, (v, score) in both.items())
        + ".",
        "",
    ]
    path.write_text("\n".join(lines))


def trial_parser(
    description: str, datasets: Any, methods: Any, rates: tuple[float, ...], runs: str
) -> argparse.ArgumentParser:
    """The options every validation-trial script shares: --dataset, --methods, --rates,
    --runs (trial run directories) and --results (ledger and report)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(datasets), required=True)
    parser.add_argument("--methods", default=",".join(methods), help="comma-separated")
    parser.add_argument("--rates", default=",".join(map(str, rates)))
    parser.add_argument("--runs", default=runs, help="trial run directories")
    parser.add_argument(
        "--results", default=str(Path(__file__).parent / "results"), help="ledger and report"
    )
    return parser


def main() -> None:
    parser = trial_parser(__doc__, DATASET_SETTINGS, VARIANTS, RATES, "runs/tune")
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="parallel trial processes")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    rates = tuple(float(r) for r in args.rates.split(","))
    methods = [m for m in args.methods.split(",") if m]
    results = Path(args.results)
    ledger = results / "tuning" / f"{args.dataset}.jsonl"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    command = f"python experiments/tune.py --dataset {args.dataset}"
    rows = read_ledger(ledger)
    if not args.report_only:
        todo = []
        only = set(args.variants.split(",")) if args.variants else None
        for t in trials(methods, rates, only):
            ids = [
                trial_id(t["method"], t["variant"], r)
                for r in (rates if t["rate"] is None else [t["rate"]])
            ]
            if not all(i in rows for i in ids):
                todo.append(t)
        # longest trainings first, so that parallel workers finish together
        slowest_first = ("mrmp", "pmp", "ssp", "tcmp", "ctf", "magnitude", "dense")
        todo.sort(key=lambda t: slowest_first.index(t["method"]))
        print(f"{len(todo)} trials to run ({len(rows)} ledger rows reused)", flush=True)
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
            jobs = {pool.submit(run_trial, args.dataset, t, args.runs, rates): t for t in todo}
            for job in futures.as_completed(jobs):
                t = jobs[job]
                try:
                    new = job.result()
                except Exception as err:  # a failed trial is reported, the others go on
                    print(f"FAILED {t['method']}/{t['variant']} r={t['rate']}: {err!r}", flush=True)
                    continue
                append_rows(ledger, rows, new)
                for row in new:
                    print(
                        f"{row['id']}: val {_pct(row['val_accuracy'])}  soft "
                        f"{row['soft_rate']:.4f}  crisp {row['crisp_fraction'] or 0:.4f}  "
                        f"{row['trial_s']:.0f} s",
                        flush=True,
                    )
                write_report(args.dataset, rows, results / f"tuning_{args.dataset}.md", command)
    write_report(args.dataset, rows, results / f"tuning_{args.dataset}.md", command)
    print(f"wrote {results / f'tuning_{args.dataset}.md'} on {platform.node()}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
