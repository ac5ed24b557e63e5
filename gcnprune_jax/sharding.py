"""Sweeps (seeds × folds) sharded over all visible devices with `jax.sharding`.

Several runs that share one model and trainer configuration and differ only in seed (and, for
SBU, fold) are one computation with a longer leading axis: `Trainer.train_chunk` already
`vmap`s over the fold axis, so the runs' states and data are concatenated along it, that axis
is split over a 1-D device mesh (axis "runs", `NamedSharding(mesh, PartitionSpec("runs"))`)
and `jax.jit` partitions the vmapped program over the devices (GSPMD); no `pmap`. Each entry
of the leading axis is computed independently, so a sweep gives each run the numbers it gets
alone up to float rounding (tests/test_sharding.py checks this on 4 forced host devices: the
same masks and accuracies, parameters within 3e-8 after 4 epochs, not bit-identical, because
XLA compiles a batch of 4, of 1 per device and of 1 alone into differently blocked products).

The leading size must be a multiple of the device count: `pad_leading` repeats the last entry
to pad, and `sweep` drops the padded entries from its results.

Multi-host (documentation only; not tested here): call `jax.distributed.initialize()` at the
start of the script, and run the same script on every host with the same arguments. The mesh
of `device_mesh()` then spans `jax.devices()`, the devices of all hosts. Every host builds the
same `Run`s, so `jax.device_put(x, NamedSharding(mesh, P("runs")))` of the full host array
(what `shard_leading` does) places each host's slices on its own devices; alternatively, build
only the host's rows and assemble the global array with
`jax.make_array_from_process_local_data(sharding, local_rows)`. Results are then not fully
addressable on one host: `sweep` gathers with `jax.device_get` (single-host as written), so
across hosts gather with `jax.experimental.multihost_utils.process_allgather` instead, and let
one process (`jax.process_index() == 0`) write files.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcnprune_jax.config import RunConfig
from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.runner import Run
from gcnprune_jax.train import FoldData, TrainState

AXIS = "runs"
# What runs of one sweep may differ in: everything else fixes the compiled program.
SWEEP_FIELDS = ("seed", "fold")


def device_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "runs" over `devices` (default: `jax.devices()`, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("device_mesh: no devices given")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,))


def leading_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's "runs" axis, the other axes whole on each device."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def pad_leading(tree: Any, multiple: int) -> tuple[Any, int]:
    """Pad every leaf's leading axis (size n, the same for all leaves) up to a multiple of
    `multiple` by repeating the last entry. Returns (padded tree, n); leaves become numpy."""
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"pad_leading: leaves need one common leading size, got {sizes}")
    (n,) = sizes
    if n < 1 or multiple < 1:
        raise ValueError(f"pad_leading: need n >= 1 and multiple >= 1, got {n} and {multiple}")
    extra = -n % multiple

    def pad(leaf):
        leaf = np.asarray(leaf)
        if not extra:
            return leaf
        return np.concatenate([leaf, np.repeat(leaf[-1:], extra, axis=0)])

    return jax.tree.map(pad, tree), n


def shard_leading(tree: Any, mesh: Mesh) -> Any:
    """Every leaf on the mesh with its leading axis split over "runs" (device i holds rows
    i·n/d … (i+1)·n/d − 1). The leading size n must be a multiple of the device count d."""
    d = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] % d:
            raise ValueError(
                f"shard_leading: leading size {np.shape(leaf)[:1]} is not a multiple of the "
                f"{d} devices; pad with pad_leading first"
            )
    return jax.device_put(tree, leading_sharding(mesh))


def concat_leading(trees: Sequence[Any]) -> Any:
    """Concatenate pytrees of one structure along their existing leading axis (numpy)."""
    return jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *trees)


def split_leading(tree: Any, sizes: Sequence[int]) -> list[Any]:
    """The inverse of `concat_leading`: consecutive pieces of `sizes` rows (numpy), padding
    rows past sum(sizes) dropped. Gathers sharded arrays to the host."""
    tree = jax.device_get(tree)
    bounds = np.cumsum([0, *sizes])
    return [
        jax.tree.map(lambda a, lo=lo, hi=hi: np.asarray(a)[lo:hi], tree)
        for lo, hi in itertools.pairwise(bounds)
    ]


def _flat_config(cfg: RunConfig) -> dict[str, Any]:
    flat = {}
    for name, value in cfg.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


def check_compatible(runs: Sequence[Run]) -> None:
    """Raise ConfigError unless all runs share one configuration apart from `SWEEP_FIELDS` and
    have the same state and data shapes apart from the leading (fold) axis."""
    if not runs:
        raise ConfigError("sweep: no runs given")
    first = _flat_config(runs[0].cfg)
    ref_state = jax.tree_util.tree_flatten_with_path(runs[0].initial_state)
    ref_data = jax.tree_util.tree_flatten_with_path(runs[0].data)
    for i, run in enumerate(runs[1:], start=1):
        flat = _flat_config(run.cfg)
        diffs = [
            f"{k}: {first.get(k)!r} vs {flat.get(k)!r}"
            for k in sorted(set(first) | set(flat))
            if k not in SWEEP_FIELDS and first.get(k) != flat.get(k)
        ]
        if diffs:
            raise ConfigError(
                f"sweep: run {i} differs from run 0 in {'; '.join(diffs)}; runs of one sweep "
                f"may differ only in {', '.join(SWEEP_FIELDS)}"
            )
        for what, ref, tree in (
            ("state", ref_state, run.initial_state),
            ("data", ref_data, run.data),
        ):
            leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
            if treedef != ref[1]:
                raise ConfigError(f"sweep: run {i}'s {what} has another structure than run 0's")
            for (path, a), (_, b) in zip(ref[0], leaves, strict=True):
                if np.shape(a)[1:] != np.shape(b)[1:] or np.result_type(a) != np.result_type(b):
                    raise ConfigError(
                        f"sweep: run {i}'s {what}{jax.tree_util.keystr(path)} has shape "
                        f"{np.shape(b)[1:]} {np.result_type(b)} per fold, run 0's "
                        f"{np.shape(a)[1:]} {np.result_type(a)} (same dataset and fold "
                        "sizes needed)"
                    )


class Stacked(NamedTuple):
    """Runs concatenated along the leading axis and sharded over a mesh.

    state: TrainState, every leaf (P, ...) with P = sum(sizes) rounded up to a multiple of
      the device count (padding repeats the last run's last fold).
    data: FoldData, leaves (P, N, ...) likewise.
    sizes: each run's number of folds, len(run.cfg.folds), in order; n_real = sum(sizes).
    """

    state: TrainState
    data: FoldData
    sizes: tuple[int, ...]
    n_real: int


def stack_runs(runs: Sequence[Run], mesh: Mesh) -> Stacked:
    """Concatenate the runs' `initial_state` and `data` (each (folds, ...)), pad and shard."""
    check_compatible(runs)
    d = mesh.devices.size
    state, n_real = pad_leading(concat_leading([r.initial_state for r in runs]), d)
    data, _ = pad_leading(concat_leading([r.data for r in runs]), d)
    sizes = tuple(len(r.cfg.folds) for r in runs)
    return Stacked(shard_leading(state, mesh), shard_leading(data, mesh), sizes, n_real)


class SweepResult(NamedTuple):
    """Per run, in the order given, numpy arrays with the run's fold axis F = len(folds):

    runs: the `Run`s (for `run.export(state)` or `runner.summarize(run, state, [])`).
    states: final TrainState, leaves (F, ...), as `run.initial_state` after training.
    test_accuracy: (F,) accuracy on the test split from `run.trainer.evaluate` (the trained
      objective: crisp masks for the baselines, soft masks for learned methods, plain net
      for dense; summarize() gives the exported network's).
    metrics: train metrics {"loss", "ce", "penalty", "train_accuracy"}, each (F, epochs).
      Not checked for divergence: look for non-finite losses before using a run.
    """

    runs: list[Run]
    states: list[TrainState]
    test_accuracy: list[np.ndarray]
    metrics: list[dict[str, np.ndarray]]


def _build_runs(
    cfgs_or_runs: Sequence[RunConfig | Run],
    dataset: SkeletonDataset | None,
    data_dir: str | None,
) -> list[Run]:
    from gcnprune_jax.data import load_dataset

    runs = []
    for item in cfgs_or_runs:
        if isinstance(item, Run):
            runs.append(item)
            continue
        if dataset is None:
            dataset = load_dataset(item.dataset, data_dir, seed=item.data_seed)
        runs.append(Run(item, dataset))
    return runs


def sweep(
    cfgs_or_runs: Sequence[RunConfig | Run],
    *,
    dataset: SkeletonDataset | None = None,
    data_dir: str | None = None,
    mesh: Mesh | None = None,
) -> SweepResult:
    """Train several runs of one configuration (differing in seed / fold) as one sharded
    program and return each run's final state, test accuracy and train metrics.

    cfgs_or_runs: `Run`s, or `RunConfig`s built into runs on `dataset` (default: loaded
      once from `data_dir` with the first config's data_seed).
    mesh: default `device_mesh()`, all visible devices.

    All runs go through `runs[0].trainer_for(epoch).train_chunk` over `runs[0].chunks(0)`,
    i.e. the epochs of a fresh `run_training` (no checkpoints); magnitude / structured
    pruning's `run.prune`, and a fine-tuned learned method's `run.fix_masks`, are applied
    per run, on the host, at their epoch.
    """
    runs = _build_runs(cfgs_or_runs, dataset, data_dir)
    mesh = device_mesh() if mesh is None else mesh
    stacked = stack_runs(runs, mesh)
    lead = runs[0]
    state, data, sizes = stacked.state, stacked.data, stacked.sizes
    chunk_metrics = []
    for first, last in lead.chunks(0):
        trainer = lead.trainer_for(first)
        state, metrics = trainer.train_chunk(state, data, last - first)
        chunk_metrics.append(split_leading(metrics, sizes))
        if last in (lead.prune_epoch, lead.finetune_epoch):
            # magnitude / structured pruning selects its mask; a fine-tuned learned method
            # fixes its exported masks (`Run.fix_masks`)
            pieces = split_leading(state, sizes)
            step = (
                (lambda r, s: r.prune(s))
                if last == lead.prune_epoch
                else (lambda r, s: r.fix_masks(s)[0])
            )
            changed = [jax.device_get(step(r, s)) for r, s in zip(runs, pieces, strict=True)]
            state = shard_leading(pad_leading(concat_leading(changed), mesh.devices.size)[0], mesh)
    trainer = lead.trainer_for(lead.cfg.train.epochs)
    test = trainer.evaluate(state, data.test)
    metrics = [
        {k: np.concatenate([c[i][k] for c in chunk_metrics], axis=1) for k in chunk_metrics[0][i]}
        for i in range(len(runs))
    ]
    return SweepResult(
        runs=runs,
        states=split_leading(state, sizes),
        test_accuracy=[t["accuracy"] for t in split_leading(test, sizes)],
        metrics=metrics,
    )


def seed_configs(cfg: RunConfig, seeds: Sequence[int]) -> list[RunConfig]:
    """`cfg` once per seed: the configs of a seed sweep."""
    return [cfg.replace(seed=int(s)) for s in seeds]
