"""Inference speed of pruned networks (docs/methods.md#costs-and-compaction): `gcnprune export`
and `gcnprune bench`.

Paths timed side by side, in one process, on the current JAX backend:
- `masked_dense`: the original network on W = Ŵ ⊙ m (what pruning gives with no more work);
- `compact_dense`: the compacted network (`compact.compact`), dense kernels;
- `bcoo`: the uncompacted network with its FC kernels as BCOO sparse matrices;
- `compact_bcoo`: the compacted network with BCOO FC kernels;
- `compact_auto`: the compacted network with each FC kernel in the layout measured fastest
  for it (`compact.choose_layouts`): what `gcnprune export` writes.
With `onnx=True` (`gcnprune bench --onnx`, extra `onnx`), also in ONNX Runtime:
- `onnx_masked`: the masked network (every unit kept, the pruned weights zero) exported to
  ONNX;
- `onnx_compact`: the compacted network exported to ONNX (`gcnprune export --format onnx`).
Speedup = time(masked network) / time(path) at the same batch size, the masked network run
by the same runtime: `masked_dense` for the JAX paths, `onnx_masked` for the ONNX ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax.compact import (
    CompactGCN,
    apply_compact,
    choose_layouts,
    compact,
    compact_flops,
    compact_stages,
    save_compact,
    stage_times,
    time_call,
    with_layouts,
)
from gcnprune_jax.costs import dense_flops, flops_structured, flops_unstructured
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning.api import apply_masks, prunable_leaves

PATHS = ("masked_dense", "compact_dense", "bcoo", "compact_bcoo", "compact_auto")
ONNX_PATHS = ("onnx_masked", "onnx_compact")


def fold_networks(run: Any, state: Any, folds: Sequence[int] | None = None) -> list[dict]:
    """Per fold of a restored run: its latent params, crisp masks and test inputs."""
    export = run.export(state)
    n_folds = len(run.cfg.folds)
    chosen = range(n_folds) if folds is None else folds
    out = []
    for f in chosen:
        latent = jax.tree.map(lambda a, f=f: np.asarray(a[f]), state.latent)
        test_w = np.asarray(run.data.test.w[f]) > 0
        x = np.asarray(run.data.test.x[f])[test_w]
        out.append(
            {"fold": run.cfg.folds[f] + 1, "latent": latent, "masks": export.masks[f], "x": x}
        )
    return out


def tiled(x: np.ndarray, batch: int) -> jax.Array:
    """A batch of `batch` samples: the inputs `x` repeated as often as needed (float32)."""
    return jnp.asarray(np.concatenate([x] * int(np.ceil(batch / len(x))))[:batch], jnp.float32)


def relative_error(a: jax.Array, b: jax.Array) -> float:
    """max |a − b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def build_paths(run: Any, latent: dict, masks: dict, x: np.ndarray, batch: int = 64):
    """{path: (fn, params)} for the five paths of one network, the compacted network with
    the layouts measured fastest at `batch`, the layout timings, and each path's max
    relative output error on x against the masked network."""
    cfg, adjacency = run.cfg, np.asarray(run.adjacency)
    effective = apply_masks(latent, {n: jnp.asarray(m, jnp.float32) for n, m in masks.items()})
    n_layers = len(cfg.model.fc) + 1
    compacted = compact(latent, masks, cfg.model, adjacency=adjacency)
    full = compact(latent, masks, cfg.model, adjacency=adjacency, remove=False)
    layouts, layout_times = choose_layouts(
        compacted, run.ds.n_nodes, cfg.features.n_features, batch=batch
    )
    auto = with_layouts(compacted, layouts)
    adj = jnp.asarray(adjacency, jnp.float32)
    run_compact = jax.jit(lambda spec, p, xb: apply_compact(spec, p, xb, adj), static_argnums=0)

    def compact_fn(net: CompactGCN):
        return (lambda p, xb, spec=net.spec: run_compact(spec, p, xb)), net.params

    apply_fn = jax.jit(lambda p, xb: run.apply_fn(p, xb))
    paths = {
        "masked_dense": (apply_fn, effective),
        "compact_dense": compact_fn(compacted),
        "bcoo": compact_fn(with_layouts(full, ("bcoo",) * n_layers)),
        "compact_bcoo": compact_fn(with_layouts(compacted, ("bcoo",) * n_layers)),
        "compact_auto": compact_fn(auto),
    }
    xs = jnp.asarray(x, jnp.float32)
    reference = apply_fn(effective, xs)
    errors = {name: relative_error(fn(p, xs), reference) for name, (fn, p) in paths.items()}
    return paths, auto, layout_times, errors, full


def onnx_paths(full: CompactGCN, auto: CompactGCN, adjacency: Any, n_features: int) -> dict:
    """{path: (fn, None)} of ONNX_PATHS: ONNX Runtime sessions of the masked network (`full`:
    compacted with nothing removed) and of the compacted one, fn(None, x) -> logits."""
    import tempfile

    from gcnprune_jax.deploy import export_onnx, onnx_session

    out = {}
    with tempfile.TemporaryDirectory(prefix="gcnprune_onnx_") as work:
        for name, net in (("onnx_masked", full), ("onnx_compact", auto)):
            path = export_onnx(net, adjacency, n_features, Path(work) / f"{name}.onnx")
            session = onnx_session(path)  # reads the files now; the session keeps the weights
            out[name] = ((lambda _, xb, s=session: s(np.asarray(xb))), None)
    return out


def bench_network(
    run: Any,
    latent: dict,
    masks: dict,
    x: np.ndarray,
    batch_sizes: Sequence[int] = (1, 64, 1024),
    repeats: int = 20,
    onnx: bool = False,
) -> dict[str, Any]:
    """Latency and throughput of every path at every batch size, with FLOP ratios (and the
    ONNX Runtime paths with `onnx`)."""
    cfg = run.cfg
    dims = run.model_dims
    paths, auto, layout_times, errors, full = build_paths(run, latent, masks, x)
    names = PATHS
    if onnx:
        extra = onnx_paths(full, auto, np.asarray(run.adjacency), cfg.features.n_features)
        reference = paths["masked_dense"][0](paths["masked_dense"][1], jnp.asarray(x))
        errors.update({n: relative_error(fn(p, x), reference) for n, (fn, p) in extra.items()})
        paths, names = {**paths, **extra}, PATHS + ONNX_PATHS
    dense = dense_flops(cfg.model, **dims)
    flops = {
        "dense": dense,
        "unstructured": flops_unstructured(masks, cfg.model, **dims),
        "structured": flops_structured(masks, cfg.model, **dims),
        "compact": compact_flops(auto, dims["n_nodes"]),
    }
    rows = []
    chosen = {}
    for batch in batch_sizes:
        xb = tiled(x, batch)
        # compact_auto: the layouts measured fastest at this batch size
        layouts, _ = choose_layouts(auto, dims["n_nodes"], cfg.features.n_features, batch=batch)
        chosen[batch] = list(layouts)
        fn = paths["compact_dense"][0]
        batch_paths = {**paths, "compact_auto": (fn, with_layouts(auto, layouts).params)}
        times = {
            name: time_call(fn, p, xb, repeats=repeats) for name, (fn, p) in batch_paths.items()
        }
        for name in names:
            masked = "onnx_masked" if name in ONNX_PATHS else "masked_dense"
            rows.append(
                {
                    "path": name,
                    "batch": batch,
                    "latency_s": times[name],
                    "throughput_per_s": batch / times[name],
                    "speedup": times[masked] / times[name],
                }
            )
    # where the time goes: each stage of the compacted network run alone (jitted) on the
    # previous stage's output, on the whole largest batch at once and on one chunk of it
    # (what `apply_compact` runs per loop step), both as ms per 1024 samples
    big = max(batch_sizes)
    xb = tiled(x, big)
    stages = compact_stages(auto.spec, np.asarray(run.adjacency))
    chunk = min(auto.spec.batch_chunk or big, big)
    per_layer = {
        f"batch {big}": stage_times(stages, auto.params, xb, repeats=repeats),
        f"chunk {chunk}": stage_times(stages, auto.params, xb[:chunk], repeats=repeats),
    }
    per_layer_ms = {
        where: {name: 1e3 * t * 1024 / int(where.split()[1]) for name, t in times.items()}
        for where, times in per_layer.items()
    }
    kept = sum(int(np.count_nonzero(m)) for m in masks.values())
    total = sum(int(np.size(m)) for m in masks.values())
    return {
        "realized_rate": 1.0 - kept / total,
        "flops": flops,
        # FLOPs as a fraction of dense (lower is cheaper), the convention of result.json ...
        "flops_fraction_structured": flops["structured"] / dense,
        "flops_fraction_compact": flops["compact"] / dense,
        "flops_fraction_unstructured": flops["unstructured"] / dense,
        # ... and the speedup they promise (dense / path, > 1), named as such in tables.
        "flop_ratio_structured": dense / max(flops["structured"], 1),
        "flop_ratio_compact": dense / max(flops["compact"], 1),
        "flop_ratio_unstructured": dense / max(flops["unstructured"], 1),
        "layouts": {str(b): lay for b, lay in chosen.items()},
        "layout_times_s": layout_times,
        "max_relative_error": errors,
        "stage_ms_per_1024": per_layer_ms,
        "rows": rows,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
    }


def export_run(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data_dir: str | None = None,
    batch: int = 64,
    formats: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """`gcnprune export`: the compacted network of every fold of a saved run, checked against
    the masked network on the fold's real test inputs, each FC kernel in its fastest layout
    at `batch`, written to out/ (one fold) or out/fold<k>/ (SBU's five); with `formats`
    (`deploy.FORMATS`) also as portable files, each checked on the same inputs."""
    from gcnprune_jax.deploy import parse_formats, write_portable
    from gcnprune_jax.runner import load_checkpoint

    formats = parse_formats(formats)
    run, state, _ = load_checkpoint(checkpoint, data_dir=data_dir)
    nets = fold_networks(run, state)
    infos = []
    for net in nets:
        _, auto, layout_times, errors, _ = build_paths(
            run, net["latent"], net["masks"], net["x"], batch
        )
        worst = max(errors.values())
        if worst > 1e-5:
            raise AssertionError(
                f"compacted network differs from the masked one by {worst:.2e} (relative)"
            )
        dims = run.model_dims
        info = {
            "source": str(Path(checkpoint).absolute()),
            "dataset": run.cfg.dataset,
            "method": run.cfg.method,
            "target_rate": run.cfg.target_rate,
            "fold": net["fold"],
            "n_nodes": dims["n_nodes"],
            "n_features": dims["n_features"],
            "n_classes": dims["n_classes"],
            "flops_dense": dense_flops(run.cfg.model, **dims),
            "flops_structured": flops_structured(net["masks"], run.cfg.model, **dims),
            "flops_compact": compact_flops(auto, dims["n_nodes"]),
            "max_relative_error": errors["compact_auto"],
            "layout_batch": batch,
            "layout_times_s": layout_times,
            "backend": jax.default_backend(),
        }
        target = Path(out) if len(nets) == 1 else Path(out) / f"fold{net['fold']}"
        if formats:
            info["portable"] = write_portable(
                auto, np.asarray(run.adjacency), net["x"], target, formats
            )
        save_compact(target, auto, np.asarray(run.adjacency), info)
        infos.append({**info, "directory": str(target)})
    return infos


def bench_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    data_dir: str | None = None,
    batch_sizes: Sequence[int] = (1, 64, 1024),
    fold: int = 0,
    repeats: int = 20,
    onnx: bool = False,
) -> dict[str, Any]:
    """`gcnprune bench --checkpoint`: every path of one fold (index `fold`) of a saved run."""
    from gcnprune_jax.runner import load_checkpoint

    run, state, _ = load_checkpoint(checkpoint, data_dir=data_dir)
    if not 0 <= fold < len(run.cfg.folds):
        raise ConfigError(f"--fold index {fold} out of range for {len(run.cfg.folds)} folds")
    net = fold_networks(run, state, [fold])[0]
    result = bench_network(
        run, net["latent"], net["masks"], net["x"], batch_sizes, repeats, onnx=onnx
    )
    return {
        "dataset": run.cfg.dataset,
        "method": run.cfg.method,
        "target_rate": run.cfg.target_rate,
        "fold": net["fold"],
        "source": str(Path(checkpoint).absolute()),
        **result,
    }


def bench_untrained(
    cfg: Any,
    *,
    data_dir: str | None = None,
    batch_sizes: Sequence[int] = (1, 64, 1024),
    repeats: int = 20,
    onnx: bool = False,
) -> dict[str, Any]:
    """`gcnprune bench --method M --rate R`: a baseline's mask chosen on the initial weights
    (magnitude, structured or random; the learned methods need a trained --checkpoint).
    Speed depends only on the pattern's structure, so this measures a method's kind of
    sparsity without training."""
    from gcnprune_jax.data import load_dataset
    from gcnprune_jax.pruning.baselines import BASELINES
    from gcnprune_jax.runner import Run

    if cfg.method not in ("magnitude", "structured", "random"):
        raise ConfigError(
            f"--method {cfg.method}: without --checkpoint, bench takes magnitude, structured "
            "or random (chosen on the initial weights); pass --checkpoint for a trained run"
        )
    ds = load_dataset(cfg.dataset, data_dir, seed=cfg.data_seed)
    run = Run(cfg, ds)
    latent = jax.tree.map(lambda a: np.asarray(a[0]), run.initial_state.latent)
    leaves = {n: np.asarray(w) for n, w in prunable_leaves(latent).items()}
    masks = BASELINES[cfg.method].select(
        leaves, cfg.target_rate, key=jax.random.key(cfg.seed), grads=None, options=cfg.pruning
    )
    masks = {n: np.asarray(m) > 0.5 for n, m in masks.items()}
    test_w = np.asarray(run.data.test.w[0]) > 0
    x = np.asarray(run.data.test.x[0])[test_w]
    result = bench_network(run, latent, masks, x, batch_sizes, repeats, onnx=onnx)
    return {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "target_rate": cfg.target_rate,
        "fold": cfg.folds[0] + 1,
        "source": "initial weights",
        **result,
    }


def markdown_rows(results: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table lines: one row per (network, batch, path)."""
    lines = [
        "| method | rate | batch | path | latency ms | throughput /s | speedup "
        "| FLOP speedup (dense / path) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for row in res["rows"]:
            ratio = (
                res["flop_ratio_unstructured"]
                if row["path"] in ("bcoo", "compact_bcoo")
                else res["flop_ratio_compact"]
                if row["path"] not in ("masked_dense", "onnx_masked")
                else 1.0
            )
            lines.append(
                f"| {res['method']} | {res['target_rate']:g} | {row['batch']} | {row['path']} | "
                f"{1e3 * row['latency_s']:.3f} | {row['throughput_per_s']:.0f} | "
                f"{row['speedup']:.2f} | {ratio:.2f} |"
            )
    return lines


def markdown_stages(results: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table lines: per network, each stage of the compacted network (ms per 1024
    samples), on the whole batch at once and per chunk."""
    lines = (
        [
            "| method | rate | stage | "
            + " | ".join(f"ms/1024, {w}" for w in next(iter(results))["stage_ms_per_1024"])
            + " |"
        ]
        if results
        else []
    )
    if not results:
        return lines
    lines.append("|---|---|---|" + "---|" * len(results[0]["stage_ms_per_1024"]))
    for res in results:
        cols = list(res["stage_ms_per_1024"].values())
        for name in cols[0]:
            cells = " | ".join(f"{c[name]:.2f}" for c in cols)
            lines.append(f"| {res['method']} | {res['target_rate']:g} | {name} | {cells} |")
    return lines
