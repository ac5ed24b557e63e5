"""The project's compiled training against a plain JAX + optax twin of the same step.

The twin trains the same network (the project's own `apply_fn`, so the model math is identical)
on the same fold with full-batch Adam inside one `lax.scan`: cross-entropy, gradient, update,
nothing else. The project's chunk (`Trainer.train_chunk`, as `gcnprune prune` runs it) also
carries a fold axis, padding weights, per-epoch metrics, a dropout key per step, the method's
mask hooks and the adaptive learning-rate rule. Variants switch those off one at a time, so the
table says what each costs:

- `project`: `Run`'s trainer (fold axis of size 1, the configured learning-rate rule);
- `project_no_fold`: the same trainer without the fold axis (`Trainer(fold_axis=False)`);
- `project_constant_lr`: without the fold axis and with a constant learning rate;
- `twin`: the plain step.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false GCNPRUNE_DATA_DIR=../shared/data \\
        taskset -c 1 python benchmarks/twin_jax.py --dataset sbu --epochs 50

Rounds alternate the contenders in one process; each cell is the best of `--repeats` calls,
compilation excluded. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from timing import best_of

from gcnprune_jax.config import default_config
from gcnprune_jax.data import load_dataset
from gcnprune_jax.runner import Run
from gcnprune_jax.train import Trainer


def twin_chunk(apply_fn, learning_rate: float, epochs: int):
    """Full-batch Adam epochs in one `lax.scan`: the step with nothing beyond the math."""
    opt = optax.adam(learning_rate)

    def chunk(params, key, x, y):
        def epoch(carry, _):
            params, opt_state, key = carry
            key, dropout_key = jax.random.split(key)

            def loss(p):
                logits = apply_fn(p, x, dropout_key)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), value

        (params, _, _), losses = jax.lax.scan(
            epoch, (params, opt.init(params), key), None, length=epochs
        )
        return params, losses

    return jax.jit(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sbu", choices=("sbu", "fpha", "synthetic"))
    parser.add_argument("--epochs", type=int, default=50, help="epochs per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/twin_jax")
    args = parser.parse_args()
    if min(args.epochs, args.repeats, args.rounds) < 1:
        parser.error("--epochs, --repeats and --rounds must be at least 1")

    cfg = default_config(args.dataset)
    if args.dataset == "sbu":
        cfg = cfg.replace(fold="1")
    run = Run(cfg, load_dataset(cfg.dataset, None, seed=cfg.data_seed))
    one = lambda tree: jax.tree.map(lambda a: a[0], tree)  # noqa: E731
    state1, data1 = one(run.initial_state), one(run.data)
    n_train = int(data1.train.y.shape[0])
    keep = jnp.asarray(data1.train.w) > 0
    x, y = data1.train.x[keep], data1.train.y[keep]

    no_fold = Trainer(run.apply_fn, cfg.train, n_train=n_train, fold_axis=False)
    constant = Trainer(
        run.apply_fn,
        dataclasses.replace(cfg.train, schedule="constant"),
        n_train=n_train,
        fold_axis=False,
    )
    twin = twin_chunk(run.apply_fn, cfg.train.learning_rate, args.epochs)
    key = jax.random.key(0)

    contenders = {
        "project": lambda: run.trainer.train_chunk(run.initial_state, run.data, args.epochs),
        "project_no_fold": lambda: no_fold.train_chunk(
            no_fold.init_state(state1.latent, state1.aux, key), data1, args.epochs
        ),
        "project_constant_lr": lambda: constant.train_chunk(
            constant.init_state(state1.latent, state1.aux, key), data1, args.epochs
        ),
        "twin": lambda: twin(state1.latent, key, x, y),
    }
    calls = {name: (lambda fn=fn: jax.block_until_ready(fn())) for name, fn in contenders.items()}
    for fn in calls.values():
        fn()  # compile, excluded
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.rounds):
        for name, fn in calls.items():
            times[name].append(best_of(fn, args.repeats) / args.epochs)
        rates = ", ".join(f"{n} {1 / t[-1]:.1f} epochs/s" for n, t in times.items())
        print(f"round {r + 1}: {rates}", flush=True)

    best = {name: min(t) for name, t in times.items()}
    lines = [
        f"# The project's training against a plain JAX twin ({args.dataset})",
        "",
        f"Backend {jax.default_backend()}, jax {jax.__version__}, {platform.machine()}; "
        f"{n_train} training samples, full batch, {args.epochs} epochs per call, best of "
        f"{args.repeats} calls per round, {args.rounds} rounds alternating, compile excluded. "
        "Command: `python benchmarks/twin_jax.py "
        f"--dataset {args.dataset} --epochs {args.epochs}`.",
        "",
        "| path | epochs/s per round | best epochs/s | time / twin's |",
        "|---|---|---|---|",
    ]
    for name, t in times.items():
        per_round = " / ".join(f"{1 / v:.1f}" for v in t)
        ratio = best[name] / best["twin"]
        lines.append(f"| {name} | {per_round} | {1 / best[name]:.1f} | {ratio:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "seconds_per_epoch": times}, indent=2) + "\n"
    )
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
