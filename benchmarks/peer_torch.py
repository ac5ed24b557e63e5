"""A PyTorch peer of the default GCN, timed side by side with the project (issue 25, item 4).

Builds the default SBU model of `gcnprune_jax.models.gcn` (attention blocks, flatten, FC,
classifier) in PyTorch, copies the project's initial weights into it and checks that both give
the same logits (max abs difference <= 1e-4) and have the same number of parameters. Then it
times, alternating the contenders round by round in one process:

- training: full-batch Adam epochs on SBU fold 1's training set (one step per epoch, as the
  project's default `batch_size=0`): the project's compiled chunk (`Trainer.train_chunk`,
  `--epochs` epochs per call) against PyTorch eager and `torch.compile` running the same number
  of steps (weighted cross-entropy, Adam at the project's learning rate; the project's adaptive
  rate rule is left to the project);
- inference at batch 1 / 64 / 1024: the project's masked network as trained (`apply`, jitted)
  and its compacted network (`compact.apply_compact`, all-ones masks: the dense model in the
  compacted layout) against PyTorch eager (`inference_mode`) and `torch.compile`.

Ratios are peer time / project time (> 1: the project is faster). Run pinned to one core for
stable numbers, PyTorch on one thread to match:

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false GCNPRUNE_DATA_DIR=../shared/data \\
        taskset -c 1 python benchmarks/peer_torch.py

Needs the optional extra `peer` (`pip install -e .[peer]`: torch==2.13.0). Writes
<out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from timing import best_of
from torch import nn

from gcnprune_jax.compact import apply_compact, compact
from gcnprune_jax.config import default_config
from gcnprune_jax.data import load_dataset
from gcnprune_jax.models.gcn import count_prunable
from gcnprune_jax.runner import Run


class TorchBlock(nn.Module):
    """`models.gcn.AttentionGraphConv` in PyTorch, same (H, s, ·) parameter views."""

    def __init__(self, s: int, heads: int, d: int, filters: int, attention: str, adjacency):
        super().__init__()
        self.attention = attention
        self.register_buffer("adjacency", torch.as_tensor(adjacency, dtype=torch.float32))
        if attention != "adjacency":
            self.query = nn.Parameter(torch.zeros(heads, s, d))
            self.key = nn.Parameter(torch.zeros(heads, s, d))
        if attention == "softmax+adjacency":
            self.adjacency_gain = nn.Parameter(torch.ones(heads))
        self.conv = nn.Parameter(torch.zeros(heads, s, filters))
        self.bias = nn.Parameter(torch.zeros(heads, filters))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adj = self.adjacency
        if self.attention == "adjacency":
            attn = adj.expand(x.shape[0], self.conv.shape[0], *adj.shape)
        else:
            q = torch.einsum("bvs,hsd->bhvd", x, self.query)
            k = torch.einsum("bvs,hsd->bhvd", x, self.key)
            logits = torch.einsum("bhvd,bhwd->bhvw", q, k) / math.sqrt(q.shape[-1])
            if self.attention == "softmax+adjacency":
                logits = logits + self.adjacency_gain[None, :, None, None] * adj
            if self.attention == "neighbours":
                logits = logits.masked_fill(adj <= 0, float("-inf"))
            attn = torch.softmax(logits, dim=-1)
            if self.attention == "mean":
                attn = 0.5 * (attn + adj)
        xw = torch.einsum("bvs,hsc->bhvc", x, self.conv)
        y = torch.relu(torch.einsum("bhvw,bhwc->bhvc", attn, xw) + self.bias[None, :, None, :])
        b, h, v, c = y.shape
        return y.permute(0, 2, 1, 3).reshape(b, v, h * c)


class TorchDense(nn.Module):
    """`models.gcn.Dense`: an (I, O) kernel, x @ K + b."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(i, o))
        self.bias = nn.Parameter(torch.zeros(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel + self.bias


class TorchGCN(nn.Module):
    """`models.gcn.GCN` (dropout 0) in PyTorch; module names match the JAX parameter tree."""

    def __init__(self, cfg, *, n_nodes: int, n_features: int, n_classes: int, adjacency):
        super().__init__()
        width = n_features
        self.n_blocks, self.n_fc = len(cfg.filters), len(cfg.fc)
        for b, filters in enumerate(cfg.filters):
            block = TorchBlock(
                width, cfg.heads, cfg.attention_dim, filters, cfg.attention, adjacency
            )
            self.add_module(f"block{b}", block)
            width = cfg.heads * filters
        width *= n_nodes
        for i, hidden in enumerate(cfg.fc):
            self.add_module(f"fc{i}", TorchDense(width, hidden))
            width = hidden
        self.classifier = TorchDense(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in range(self.n_blocks):
            x = getattr(self, f"block{b}")(x)
        x = x.reshape(x.shape[0], -1)
        for i in range(self.n_fc):
            x = torch.relu(getattr(self, f"fc{i}")(x))
        return self.classifier(x)


def load_weights(model: TorchGCN, params: dict) -> None:
    """Copy the JAX parameter tree {module: {leaf: array}} into the torch model."""
    with torch.no_grad():
        for module, leaves in params.items():
            for leaf, value in leaves.items():
                getattr(getattr(model, module), leaf).copy_(torch.as_tensor(np.array(value)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=50, help="epochs per timed training call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="per round, best of")
    parser.add_argument("--batch-sizes", default="1,64,1024")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", default="benchmarks/results/peer_torch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    cfg = default_config("sbu").replace(fold="1")
    run = Run(cfg, load_dataset("sbu", None))
    dims = run.model_dims
    adjacency = np.asarray(run.adjacency)
    params = jax.tree.map(lambda a: np.asarray(a[0]), run.initial_state.latent)
    model = TorchGCN(cfg.model, adjacency=adjacency, **dims)
    load_weights(model, params)

    # same architecture: same parameter count, same logits on real test inputs
    n_jax = int(sum(np.size(a) for a in jax.tree.leaves(params)))
    n_torch = int(sum(p.numel() for p in model.parameters()))
    test_x = np.asarray(run.data.test.x[0])[np.asarray(run.data.test.w[0]) > 0]
    ref = np.asarray(jax.jit(run.apply_fn)(params, jnp.asarray(test_x)))
    with torch.inference_mode():
        out = model(torch.as_tensor(test_x)).numpy()
    logit_diff = float(np.max(np.abs(out - ref)))
    if n_jax != n_torch or logit_diff > 1e-4:
        raise SystemExit(f"peer differs: params {n_jax} vs {n_torch}, logits {logit_diff:.2e}")
    print(
        f"peer: {n_torch} parameters ({count_prunable(params)} prunable), "
        f"max |logit difference| {logit_diff:.1e}",
        flush=True,
    )

    # --- training: full-batch Adam, args.epochs steps per call
    train = run.data.train
    tx = torch.as_tensor(np.asarray(train.x[0]))
    ty = torch.as_tensor(np.asarray(train.y[0]), dtype=torch.long)
    tw = torch.as_tensor(np.asarray(train.w[0]))
    lr = cfg.train.learning_rate

    def torch_trainer(net: nn.Module, step_fn):
        opt = torch.optim.Adam(net.parameters(), lr=lr)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = step_fn(tx, ty, tw)
            loss.backward()
            opt.step()
            return loss

        def epochs():
            for _ in range(args.epochs):
                loss = step()
            return loss.item()

        return epochs

    def weighted_loss(net):
        def fn(x, y, w):
            ce = nn.functional.cross_entropy(net(x), y, reduction="none")
            return (ce * w).sum() / w.sum().clamp(min=1.0)

        return fn

    eager_net = TorchGCN(cfg.model, adjacency=adjacency, **dims)
    load_weights(eager_net, params)
    trainers = {"torch_eager": torch_trainer(eager_net, weighted_loss(eager_net))}
    compile_error = None
    compiled_net = None
    if not args.no_compile:
        try:
            compiled_net = TorchGCN(cfg.model, adjacency=adjacency, **dims)
            load_weights(compiled_net, params)
            compiled_loss = torch.compile(weighted_loss(compiled_net))
            trainers["torch_compile"] = torch_trainer(compiled_net, compiled_loss)
            trainers["torch_compile"]()  # compile (excluded from timing)
        except Exception as exc:  # report why, keep the other contenders
            compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            trainers.pop("torch_compile", None)
            traceback.print_exc()

    def project_epochs():
        state, metrics = run.trainer.train_chunk(run.initial_state, run.data, args.epochs)
        jax.block_until_ready((state, metrics))

    project_epochs()  # compile
    contenders = {"project_chunk": project_epochs, **trainers}
    train_times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, fn in contenders.items():
            train_times[name].append(best_of(fn, args.repeats) / args.epochs)
        print(
            f"round {r + 1}: "
            + ", ".join(f"{n} {1 / t[-1]:.1f} epochs/s" for n, t in train_times.items()),
            flush=True,
        )

    # --- inference
    ones = {
        f"{m}/{leaf}": np.ones(np.shape(v), bool)
        for m, leaves in params.items()
        for leaf, v in leaves.items()
        if leaf in ("query", "key", "conv", "kernel")
    }
    net = compact(params, ones, cfg.model, adjacency=adjacency)
    adj = jnp.asarray(adjacency)
    run_masked = jax.jit(lambda p, x: run.apply_fn(p, x))
    run_compact = jax.jit(lambda p, x: apply_compact(net.spec, p, x, adj))
    infer_net = TorchGCN(cfg.model, adjacency=adjacency, **dims).eval()
    load_weights(infer_net, params)
    infer_compiled = None
    infer_compile_error = None
    if not args.no_compile:
        try:
            infer_compiled = torch.compile(infer_net)
            with torch.inference_mode():
                infer_compiled(torch.as_tensor(test_x[:1]))
        except Exception as exc:
            infer_compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            infer_compiled = None

    inference: dict[str, dict[str, list[float]]] = {}
    for batch in batch_sizes:
        reps = int(np.ceil(batch / len(test_x)))
        xb_np = np.concatenate([test_x] * reps)[:batch]
        xb = jnp.asarray(xb_np)
        xt = torch.as_tensor(xb_np)
        calls = max(1, int(2048 // batch))  # calls per timing sample

        def jax_fn(fn, p, xb=xb, calls=calls):
            jax.block_until_ready(fn(p, xb))

            def go():
                for _ in range(calls):
                    out = fn(p, xb)
                jax.block_until_ready(out)

            return go

        def torch_fn(module, xt=xt, calls=calls):
            def go():
                with torch.inference_mode():
                    for _ in range(calls):
                        module(xt)

            with torch.inference_mode():
                module(xt)  # warm-up (and compile for this shape)
            return go

        fns = {
            "project_masked": jax_fn(run_masked, params),
            "project_compact": jax_fn(run_compact, net.params),
            "torch_eager": torch_fn(infer_net),
        }
        if infer_compiled is not None:
            try:
                fns["torch_compile"] = torch_fn(infer_compiled)
            except Exception as exc:
                infer_compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(best_of(fn, args.repeats) / calls)
        inference[str(batch)] = times
        print(
            f"batch {batch}: "
            + ", ".join(f"{n} {1e3 * np.median(t):.3f} ms" for n, t in times.items()),
            flush=True,
        )

    med = {n: float(np.median(t)) for n, t in train_times.items()}
    result = {
        "model": {
            "config": {k: v for k, v in vars(cfg.model).items()},
            **dims,
            "parameters": n_torch,
            "max_abs_logit_difference": logit_diff,
        },
        "train": {
            "epochs_per_call": args.epochs,
            "n_train": int(tx.shape[0]),
            "seconds_per_epoch": train_times,
            "epochs_per_s_median": {n: 1 / t for n, t in med.items()},
            "peer_over_project": {
                n: med[n] / med["project_chunk"] for n in med if n != "project_chunk"
            },
        },
        "inference": {
            b: {
                "seconds_per_call": t,
                "median_ms": {n: 1e3 * float(np.median(v)) for n, v in t.items()},
                "peer_over_project_compact": {
                    n: float(np.median(v) / np.median(t["project_compact"]))
                    for n, v in t.items()
                    if n.startswith("torch")
                },
                "peer_over_project_masked": {
                    n: float(np.median(v) / np.median(t["project_masked"]))
                    for n, v in t.items()
                    if n.startswith("torch")
                },
            }
            for b, t in inference.items()
        },
        "torch_compile_error": {"train": compile_error, "inference": infer_compile_error},
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
        "threads": {
            "torch": torch.get_num_threads(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "cpu_count": os.cpu_count(),
        },
        "machine": platform.processor() or platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result, args) + "\n")
    print(markdown(result, args))


def markdown(result: dict, args: argparse.Namespace) -> str:
    tr = result["train"]
    lines = [
        "# PyTorch peer of the default GCN (SBU fold 1), side by side",
        "",
        f"Same model in both ({result['model']['parameters']} parameters, max |logit "
        f"difference| {result['model']['max_abs_logit_difference']:.1e} with the JAX weights "
        f"copied in). jax {result['versions']['jax']}, torch {result['versions']['torch']}, "
        f"{result['machine']}, {result['threads']['cpus_usable']} usable core(s) of "
        f"{result['threads']['cpu_count']}, torch threads {result['threads']['torch']}, "
        f"XLA_FLAGS `{result['threads']['XLA_FLAGS']}`. {args.rounds} rounds alternating the "
        f"contenders, best of {args.repeats} per round, median over rounds. Command:",
        "",
        "```",
        (f"XLA_FLAGS={result['threads']['XLA_FLAGS']} " if result["threads"]["XLA_FLAGS"] else "")
        + "GCNPRUNE_DATA_DIR=../shared/data taskset -c 1 python benchmarks/peer_torch.py "
        f"--epochs {args.epochs} --rounds {args.rounds} --repeats {args.repeats}",
        "```",
        "",
        f"## Training: full-batch Adam, {tr['n_train']} samples, {tr['epochs_per_call']} epochs "
        "per call",
        "",
        "| contender | epochs/s | peer time / project time |",
        "|---|---|---|",
    ]
    for name, eps in tr["epochs_per_s_median"].items():
        ratio = tr["peer_over_project"].get(name)
        lines.append(f"| {name} | {eps:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |")
    lines += [
        "",
        "## Inference (ms per call; ratio = peer / project, > 1: the project is faster)",
        "",
        "| batch | project masked | project compact | torch eager | torch compile | "
        "eager / compact | compile / compact |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, inf in result["inference"].items():
        ms = inf["median_ms"]
        ratios = inf["peer_over_project_compact"]
        lines.append(
            f"| {b} | {ms['project_masked']:.3f} | {ms['project_compact']:.3f} | "
            f"{ms['torch_eager']:.3f} | "
            + (f"{ms['torch_compile']:.3f}" if "torch_compile" in ms else "n/a")
            + f" | {ratios['torch_eager']:.2f} | "
            + (f"{ratios['torch_compile']:.2f}" if "torch_compile" in ratios else "n/a")
            + " |"
        )
    errors = result["torch_compile_error"]
    if errors["train"] or errors["inference"]:
        lines += [
            "",
            f"torch.compile failed: train: {errors['train']}; inference: {errors['inference']}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
