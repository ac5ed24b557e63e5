"""Training throughput on this machine: epochs per second, and what vmapping the folds buys.

Measures, side by side in one process (absolute times on shared machines are noisy; the
ratio is what matters):
  - SBU, 5 folds vmapped in one compiled program: epochs/s (each epoch trains all 5 folds);
  - SBU, one fold alone: epochs/s; ratio = time(5 folds vmapped) / (5 x time(one fold));
  - FPHA (one split): epochs/s.
Compilation is excluded (one warm-up chunk first); each timing is the best of --repeats.

    GCNPRUNE_DATA_DIR=../shared/data python benchmarks/train_throughput.py --epochs 100

Prints a Markdown table and writes it (plus JSON) next to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
from timing import best_of

from gcnprune_jax.config import default_config
from gcnprune_jax.data import load_dataset
from gcnprune_jax.runner import Run


def time_epochs(run: Run, epochs: int, repeats: int) -> float:
    """Best wall time (s) of `epochs` epochs in one compiled chunk, compilation excluded."""
    state, _ = run.trainer.train_chunk(run.initial_state, run.data, epochs)  # compile + warm
    jax.block_until_ready(state)
    return best_of(
        lambda: jax.block_until_ready(run.trainer.train_chunk(run.initial_state, run.data, epochs)),
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/train_throughput")
    args = parser.parse_args()

    rows = []
    sbu = load_dataset("sbu")
    five = Run(default_config("sbu"), sbu)
    one = Run(default_config("sbu").replace(fold="1"), sbu)
    t_five = time_epochs(five, args.epochs, args.repeats)
    t_one = time_epochs(one, args.epochs, args.repeats)
    rows.append(("SBU, 5 folds vmapped", args.epochs / t_five, t_five))
    rows.append(("SBU, 1 fold", args.epochs / t_one, t_one))
    fpha = Run(default_config("fpha"), load_dataset("fpha"))
    t_fpha = time_epochs(fpha, args.epochs, args.repeats)
    rows.append(("FPHA, official split", args.epochs / t_fpha, t_fpha))
    ratio = t_five / (5 * t_one)

    device = jax.devices()[0]
    header = (
        f"Backend {jax.default_backend()} ({device.device_kind}), {platform.processor() or ''} "
        f"jax {jax.__version__}; default model; {args.epochs} epochs per timing, best of "
        f"{args.repeats}, compile excluded."
    )
    lines = [header, "", "| run | epochs/s | s per timing |", "|---|---|---|"]
    lines += [f"| {name} | {eps:.1f} | {t:.2f} |" for name, eps, t in rows]
    lines += ["", f"vmap ratio: time(5 folds vmapped) / (5 x time(1 fold)) = {ratio:.3f}"]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "backend": jax.default_backend(),
                "device": device.device_kind,
                "epochs": args.epochs,
                "rows": [{"run": n, "epochs_per_s": e, "seconds": t} for n, e, t in rows],
                "vmap_ratio": ratio,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
