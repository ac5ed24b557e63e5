"""A training run end to end: data → folds → model → compiled chunks → checkpoints → result.

This is the thin shell around the pure core (`train.py`): it owns files, checkpoints and
progress reporting (through a `Reporter` the caller passes in), never the math.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax.checkpoint import Checkpointer
from gcnprune_jax.config import RunConfig
from gcnprune_jax.costs import dense_flops
from gcnprune_jax.data import load_dataset
from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.data.features import dataset_features, fit_standardizer, normalized_adjacency
from gcnprune_jax.errors import CheckpointError, ConfigError, DivergenceError
from gcnprune_jax.models.gcn import build_gcn, count_prunable
from gcnprune_jax.train import (
    DENSE,
    FoldData,
    Split,
    Trainer,
    TrainState,
    learning_rate,
    params_digest,
    stack_trees,
)


class Reporter(Protocol):
    """Progress sink: the CLI passes a progress bar or a line printer; tests pass nothing."""

    def start(self, total_epochs: int, first_epoch: int, description: str) -> None: ...

    def update(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class SilentReporter:
    def start(self, total_epochs: int, first_epoch: int, description: str) -> None:
        pass

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def _pad(split_x: np.ndarray, split_y: np.ndarray, size: int) -> Split:
    n = split_x.shape[0]
    x = np.zeros((size,) + split_x.shape[1:], np.float32)
    y = np.zeros((size,), np.int32)
    w = np.zeros((size,), np.float32)
    x[:n], y[:n], w[:n] = split_x, split_y, 1.0
    return Split(x, y, w)


def make_fold_data(ds: SkeletonDataset, cfg: RunConfig) -> FoldData:
    """Node signals of every fold, standardized with that fold's training statistics, padded
    to common sizes and stacked: arrays have a leading fold axis of len(cfg.folds)."""
    features = dataset_features(ds, cfg.features)
    labels = np.asarray(ds.labels, np.int32)
    swapped = None
    if cfg.features.swap_persons and ds.n_persons > 1:
        swapped = dataset_features(ds, cfg.features, swap=True)
    masks = []
    for k in cfg.folds:
        test = ds.groups == k if ds.name == "sbu" else ds.groups == 1
        train = ~test if ds.name == "sbu" else ds.groups == 0
        masks.append((train, test))
    copies = (1 if swapped is None else 2) * (1 + cfg.features.augment_copies)
    n_train = copies * max(int(tr.sum()) for tr, _ in masks)
    n_test = max(int(te.sum()) for _, te in masks)
    augmented = _augmented_copies(ds, cfg)
    folds = []
    for train, test in masks:
        parts = [features[train]] + [a[train] for a in augmented]
        if swapped is not None:
            parts += [swapped[train]]
        train_x = np.concatenate(parts)
        train_y = np.tile(labels[train], len(parts))
        standardize = fit_standardizer(train_x, cfg.features)
        folds.append(
            FoldData(
                _pad(standardize(train_x), train_y, n_train),
                _pad(standardize(features[test]), labels[test], n_test),
            )
        )
    return jax.tree.map(lambda *a: np.stack(a), *folds)


def _augmented_copies(ds: SkeletonDataset, cfg: RunConfig) -> list[np.ndarray]:
    """`augment_copies` random copies of every sequence (each fold uses its training rows),
    and with `swap_persons` a person-swapped twin of each; seeded by the run seed."""
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    copies = []
    for _ in range(cfg.features.augment_copies):
        copies.append(dataset_features(ds, cfg.features, rng=rng))
        if cfg.features.swap_persons and ds.n_persons > 1:
            copies.append(dataset_features(ds, cfg.features, rng=rng, swap=True))
    return copies


def fold_keys(seed: int, folds: tuple[int, ...]) -> jax.Array:
    """One independent PRNG key per fold, derived from the run seed and the fold index."""
    base = jax.random.PRNGKey(seed)
    return jnp.stack([jax.random.fold_in(base, k) for k in folds])


class Run:
    """A configured run: dataset, stacked fold data, model, trainer and initial state."""

    def __init__(self, cfg: RunConfig, ds: SkeletonDataset) -> None:
        self.cfg = cfg
        self.ds = ds
        self.data = make_fold_data(ds, cfg)
        self.adjacency = normalized_adjacency(ds.n_nodes, ds.edges)
        self.model_dims = {
            "n_nodes": ds.n_nodes,
            "n_features": cfg.features.n_features,
            "n_classes": ds.n_classes,
        }
        # One (init, train) key pair per fold; every fold's model has the same graph, so the
        # first build's `apply` serves all of them.
        key_pairs = [jax.random.split(key) for key in fold_keys(cfg.seed, cfg.folds)]
        builds = [
            build_gcn(cfg.model, adjacency=self.adjacency, key=init_key, **self.model_dims)
            for init_key, _ in key_pairs
        ]
        self.apply_fn = builds[0][0]
        self.trainer = Trainer(self.apply_fn, cfg.train, DENSE, n_train=self.data.train.y.shape[1])
        self.initial_state: TrainState = stack_trees(
            [
                self.trainer.init_state(latent, {}, train_key)
                for (_, latent), (_, train_key) in zip(builds, key_pairs, strict=True)
            ]
        )

    def chunks(self, start_epoch: int) -> list[tuple[int, int]]:
        """(first, last) epoch ranges of the compiled chunks from `start_epoch` on. The grid is
        fixed by the config, so a resumed run executes exactly the chunks of an uninterrupted
        one."""
        total, size = self.cfg.train.epochs, self.cfg.train.chunk_epochs
        return [(e, min(e + size, total)) for e in range(0, total, size) if e >= start_epoch]


def _check_finite(metrics: dict[str, np.ndarray], first_epoch: int, last_good: int, ckpt: str):
    loss = np.asarray(metrics["loss"])  # (folds, epochs)
    if np.isfinite(loss).all():
        return
    fold, epoch = np.argwhere(~np.isfinite(loss))[0]
    raise DivergenceError(
        f"training diverged: the loss became {loss[fold, epoch]} at epoch "
        f"{first_epoch + epoch + 1} (fold index {fold}). The last good checkpoint "
        f"(epoch {last_good}) is kept in {ckpt}; lower --lr or change the schedule and "
        "start again with a new --out"
    )


def run_training(
    cfg: RunConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    dataset: SkeletonDataset | None = None,
) -> dict[str, Any]:
    """Train `cfg` (dense) and write OUT/result.json and OUT/checkpoint/. Returns the result.

    With `resume`, continues from OUT/checkpoint's latest epoch (which must come from the same
    config) and ends with exactly the parameters of an uninterrupted run.
    """
    reporter = reporter or SilentReporter()
    out = Path(out_dir)
    start = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, data_dir, seed=cfg.data_seed)
    run = Run(cfg, ds)
    # Only now that data and config are known good: bad input never leaves a directory behind.
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(out / "checkpoint")
    state, epoch, history, previous_wall_s = run.initial_state, 0, [], 0.0
    latest = ckpt.latest_epoch()
    if latest is not None:
        if not resume:
            raise ConfigError(
                f"{out} already holds a run (checkpoint at epoch {latest}); pass --resume to "
                "continue it, or choose another --out"
            )
        record = ckpt.read_record(latest)
        _check_same_config(record["config"], cfg.to_dict(), out)
        state, record = ckpt.restore(run.initial_state, latest)
        epoch, history = record["epoch"], record["history"]
        previous_wall_s = record["wall_time_s"]

    reporter.start(cfg.train.epochs, epoch, f"{cfg.dataset} {cfg.method}")
    train_s = 0.0
    try:
        for first, last in run.chunks(epoch):
            t0 = time.perf_counter()
            state, metrics = run.trainer.train_chunk(state, run.data, last - first)
            metrics = jax.device_get(metrics)
            train_s += time.perf_counter() - t0
            _check_finite(metrics, first, epoch, ckpt.directory)
            test = jax.device_get(run.trainer.evaluate(state, run.data.test))
            summary = {
                "epoch": last,
                "loss": float(np.mean(metrics["loss"][:, -1])),
                "train_accuracy": float(np.mean(metrics["train_accuracy"][:, -1])),
                "test_accuracy_monitor": float(np.mean(test["accuracy"])),
                "learning_rate": float(np.mean(learning_rate(state.opt_state, cfg.train))),
            }
            history.append(summary)
            epoch = last
            wall_s = previous_wall_s + time.perf_counter() - start
            record = {
                "config": cfg.to_dict(),
                "epoch": epoch,
                "history": history,
                "wall_time_s": wall_s,
            }
            ckpt.save(epoch, state, record)
            reporter.update(epoch, summary)
    finally:
        reporter.close()
        ckpt.close()

    result = summarize(run, state, history)
    result["wall_time_s"] = previous_wall_s + time.perf_counter() - start
    result["train_time_s"] = train_s
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _check_same_config(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    current = json.loads(json.dumps(current))  # compare as stored: tuples become lists
    if saved == current:
        return
    diffs = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [
                f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)
            ]
        elif a != b:
            diffs.append(f"{section}: {a!r} -> {b!r}")
    raise ConfigError(
        f"--resume: the run in {out} was started with a different configuration "
        f"({'; '.join(diffs)}); resume with the same options or choose another --out"
    )


def summarize(run: Run, state: TrainState, history: list[dict[str, Any]]) -> dict[str, Any]:
    """result.json fields for a dense run (INTERFACE.md)."""
    cfg = run.cfg
    test = jax.device_get(run.trainer.evaluate(state, run.data.test))
    train = jax.device_get(run.trainer.evaluate(state, run.data.train))
    one_fold = jax.tree.map(lambda a: a[0], state.latent)
    n_prunable = count_prunable(one_fold)
    flops = dense_flops(cfg.model, **run.model_dims)
    fold_acc = [float(a) for a in test["accuracy"]]
    return {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "target_rate": cfg.target_rate,
        "realized_rate": 0.0,
        "soft_rate": 0.0,
        "rounding_changed": 0,
        "accuracy": float(np.mean(fold_acc)),
        "fold_accuracies": fold_acc,
        "folds": [k + 1 for k in cfg.folds],
        "train_accuracies": [float(a) for a in train["accuracy"]],
        "params_total": n_prunable,
        "params_kept": n_prunable,
        "flops_dense": flops,
        "flops_unstructured": flops,
        "flops_structured": flops,
        # Dense: every mask entry is 1, so every connection lies on an input→output path.
        "dangling_connections": 0,
        "epochs": cfg.train.epochs,
        "seed": cfg.seed,
        "params_digest": params_digest(state.latent),
        "history": history,
        "config": cfg.to_dict(),
    }


def evaluate_checkpoint(path: str | os.PathLike, *, data_dir: str | None = None) -> dict[str, Any]:
    """Re-evaluate a saved run (its output directory or its checkpoint/ folder) from the
    config and state its checkpoint holds; returns the result fields."""
    path = Path(path)
    ckpt_dir = path / "checkpoint" if (path / "checkpoint").is_dir() else path
    if not ckpt_dir.is_dir():
        raise CheckpointError(
            f"--checkpoint {path}: no such directory (expected a run's --out "
            "directory holding checkpoint/)"
        )
    ckpt = Checkpointer(ckpt_dir)
    try:
        record = ckpt.read_record()
        cfg = RunConfig.from_dict(record["config"])
        ds = load_dataset(cfg.dataset, data_dir, seed=cfg.data_seed)
        run = Run(cfg, ds)
        state, record = ckpt.restore(run.initial_state)
    finally:
        ckpt.close()
    result = summarize(run, state, record["history"])
    result["epochs_trained"] = record["epoch"]
    return result
