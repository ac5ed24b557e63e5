"""A training run end to end: data → folds → model → compiled chunks → checkpoints → result.

This is the thin shell around the pure core (`train.py`): it owns files, checkpoints and
progress reporting (through a `Reporter` the caller passes in), never the math.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax import faults
from gcnprune_jax.checkpoint import Checkpointer
from gcnprune_jax.config import RunConfig
from gcnprune_jax.costs import dense_flops, flops_structured, flops_unstructured
from gcnprune_jax.data import DATA_DIR_ENV, load_dataset
from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.data.features import dataset_features, fit_standardizer, normalized_adjacency
from gcnprune_jax.errors import CheckpointError, ConfigError, DivergenceError, OutputError
from gcnprune_jax.models.gcn import build_gcn, is_prunable, path_name, prunable_parameters
from gcnprune_jax.pruning import api as pruning_api
from gcnprune_jax.pruning.baselines import BASELINES, fixed
from gcnprune_jax.pruning.shared import exact_export, realized_rate
from gcnprune_jax.pruning.tcmp import consistent_export
from gcnprune_jax.topology import dangling_connections
from gcnprune_jax.train import (
    DENSE,
    Context,
    FoldData,
    Objective,
    Split,
    TrainConfig,
    Trainer,
    TrainState,
    learning_rate,
    params_digest,
    stack_trees,
    weighted_cross_entropy,
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


def validation_part(
    train: np.ndarray, labels: np.ndarray, fraction: float, fold: int
) -> np.ndarray:
    """The validation part held out of a training split: boolean over all sequences.

    train: boolean mask of the split's sequences; labels: every sequence's class. Per class,
    round(fraction x its training count) sequences (at least one when the class has two or
    more) are drawn without replacement, seeded by the fold alone: every seed, method and
    setting of a tuning sweep is compared on the same validation sequences.
    """
    val = np.zeros(train.shape, bool)
    if fraction <= 0:
        return val
    rng = np.random.default_rng([0x7A1D, fold])
    for c in np.unique(labels[train]):
        members = np.flatnonzero(train & (labels == c))
        n = round(fraction * members.size)
        if members.size >= 2:
            n = min(max(n, 1), members.size - 1)
        val[rng.permutation(members)[:n]] = True
    return val


def make_fold_data(ds: SkeletonDataset, cfg: RunConfig) -> FoldData:
    """Node signals of every fold, standardized with that fold's training statistics, padded
    to common sizes and stacked: arrays have a leading fold axis of len(cfg.folds).

    With cfg.val_fraction > 0 each fold's training split loses its validation part
    (`validation_part`): the model trains (and augments) on the rest, and `val` holds the
    held-out sequences, standardized like the test split; otherwise `val` is None.
    """
    features = dataset_features(ds, cfg.features)
    labels = np.asarray(ds.labels, np.int32)
    swapped = None
    if cfg.features.swap_persons and ds.n_persons > 1:
        swapped = dataset_features(ds, cfg.features, swap=True)
    masks = []
    for k in cfg.folds:
        test = ds.groups == k if ds.name == "sbu" else ds.groups == 1
        train = ~test if ds.name == "sbu" else ds.groups == 0
        val = validation_part(train, labels, cfg.val_fraction, k)
        masks.append((train & ~val, test, val))
    copies = (1 if swapped is None else 2) * (1 + cfg.features.augment_copies)
    n_train = copies * max(int(tr.sum()) for tr, _, _ in masks)
    n_test = max(int(te.sum()) for _, te, _ in masks)
    n_val = max(int(va.sum()) for _, _, va in masks)
    augmented = _augmented_copies(ds, cfg)
    folds = []
    for train, test, val in masks:
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
                _pad(standardize(features[val]), labels[val], n_val) if n_val else None,
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


# Registered as mask functions, but not trainable by runs yet.
_NOT_WIRED: tuple[str, ...] = ()

# Pieces of at most this many epochs are one compiled program each (see `Plan.piece_epochs`).
PIECE_EPOCHS = 10
# Default wall-clock interval between checkpoints inside a chunk (`run_training`).
CHECKPOINT_EVERY_S = 60.0


def _method_hyper(cfg: RunConfig, n_nodes: int) -> dict[str, Any]:
    """The registered (learned) method's hyper-parameters from the config."""
    p = cfg.pruning
    budget = {
        "alpha": p.alpha,
        "kappa_start": p.kappa_start,
        "kappa_end": p.kappa_end,
        "lam": p.budget_lambda,
        "warmup": p.budget_warmup,
        "hold": p.kappa_hold,
        "zero_floor": p.zero_floor,
        "control": p.budget_control,
        "control_speed": p.control_speed,
    }
    prior = {
        "prior": p.prior,
        "alignment": p.alignment,
        "mu": p.mu,
        "mu_end": p.mu_end,
        "kappa_start": p.kappa_start,
        "kappa_end": p.kappa_end,
        "scope": p.prior_scope,
    }
    return {
        "ctf": {"granularities": p.granularities, **budget},
        "ssp": {
            "beta": p.rank_beta,
            "gate_tau_start": p.gate_tau_start,
            "gate_tau_end": p.gate_tau_end,
            "gate_scale": p.gate_scale,
            **budget,
        },
        "tcmp": {"model": cfg.model, "n_nodes": n_nodes, "tau_h": p.tau_h, **budget},
        "pmp": {**prior, "control": p.budget_control, "control_speed": p.control_speed},
        "mrmp": {"rates": p.rates, **prior},
    }.get(cfg.method, {})


def budget_select(cfg: RunConfig) -> pruning_api.Select | None:
    """The prunable tensors a run's method prunes and budgets: every prunable tensor (None,
    the default rule) unless `pruning.exclude` names some to keep dense."""
    excluded = frozenset(cfg.pruning.exclude)
    if not excluded:
        return None
    return lambda path, leaf: is_prunable(path, leaf) and path_name(path) not in excluded


def _check_excluded(cfg: RunConfig, latent: Any) -> None:
    """A clear error for `pruning.exclude` names that are no prunable tensor of the model, or
    that leave nothing to prune."""
    if not cfg.pruning.exclude or cfg.method == "dense":
        return
    names = list(prunable_parameters(latent))
    unknown = [n for n in cfg.pruning.exclude if n not in names]
    if unknown:
        raise ConfigError(
            f"pruning.exclude: {unknown} are not prunable tensors of this model; they are {names}"
        )
    if set(names) <= set(cfg.pruning.exclude):
        raise ConfigError("pruning.exclude: every prunable tensor is excluded, nothing to prune")


def with_excluded(masks: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Masks over every prunable tensor ({path: shape}, in its order): `masks` (over the
    budgeted ones) and all-ones masks for the tensors `pruning.exclude` keeps dense."""
    if masks.keys() == shapes.keys():
        return masks
    return {n: masks[n] if n in masks else np.ones(shape, bool) for n, shape in shapes.items()}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run trains and when its phases change, from the config alone (no data, no model).

    Three kinds of method share the one train program (docs/methods.md#baselines for the
    baselines):
    - dense: no mask;
    - a baseline (`pruning.baselines.BASELINES`): the `fixed` mask objective, its mask the
      method state; magnitude and structured train with all-ones masks until `prune_epoch`,
      then select the mask from the trained weights and fine-tune; random and SNIP select at
      initialization;
    - a learned method (the `pruning.api` registry, e.g. ctf): its soft masks and penalty at
      the target rate, with the exact export (docs/methods.md#shared-notation) at the end, or
      at `finetune_epoch` when its crisp masks are then fine-tuned (same total epochs).
    """

    cfg: RunConfig
    method: pruning_api.PruningMethod | None
    baseline: Any
    prune_epoch: int | None
    finetune_epoch: int | None

    @classmethod
    def of(cls, cfg: RunConfig, n_nodes: int) -> Plan:
        baseline = BASELINES.get(cfg.method)
        method = None
        if cfg.method != "dense" and baseline is None:
            if cfg.method not in pruning_api.names() or cfg.method in _NOT_WIRED:
                available = sorted(set(pruning_api.names()) - {*_NOT_WIRED})
                raise ConfigError(
                    f"--method {cfg.method}: described in docs/methods.md but not implemented in "
                    f"this version; available methods: {', '.join(available)}"
                )
            hyper = _method_hyper(cfg, n_nodes)
            if cfg.pruning.exclude:
                hyper["select"] = budget_select(cfg)
            method = pruning_api.get(cfg.method, **hyper)
        prune_epoch = None
        if baseline is not None and not baseline.at_init:
            if cfg.train.epochs < 2:
                raise ConfigError(
                    f"--epochs {cfg.train.epochs}: {cfg.method} trains, prunes and fine-tunes, "
                    "which needs at least 2 epochs"
                )
            epoch = round(cfg.pruning.prune_at * cfg.train.epochs)
            prune_epoch = min(max(epoch, 1), cfg.train.epochs - 1)
        finetune_epoch = None
        if method is not None and cfg.pruning.finetune > 0:
            if cfg.train.epochs < 2:
                raise ConfigError(
                    f"--epochs {cfg.train.epochs}: --finetune needs at least 2 epochs"
                )
            epoch = cfg.train.epochs - round(cfg.pruning.finetune * cfg.train.epochs)
            finetune_epoch = min(max(epoch, 1), cfg.train.epochs - 1)
        return cls(cfg, method, baseline, prune_epoch, finetune_epoch)

    def objective(self) -> Objective:
        """The train step's objective of the first phase."""
        if self.cfg.method == "mrmp":
            return pruning_api.to_multi_rate_objective(self.method, self.cfg.pruning.rates)
        if self.method is not None:
            return pruning_api.to_objective(self.method, self.cfg.target_rate)
        if self.baseline is not None:
            return FIXED_OBJECTIVE
        return DENSE

    def soft_train_config(self) -> TrainConfig:
        """The first phase's TrainConfig: the method's schedules (temperature, budget ramp,
        learning rate) span its soft phase, so with fine-tuning the masks are crisp when the
        export fixes them."""
        if self.finetune_epoch is None:
            return self.cfg.train
        return dataclasses.replace(self.cfg.train, epochs=self.finetune_epoch)

    def chunks(self, start_epoch: int) -> list[tuple[int, int]]:
        """(first, last) epoch ranges of the chunks from `start_epoch` on. The grid is fixed by
        the config (chunks of `chunk_epochs`, split at the pruning and fine-tuning epochs);
        a run resumed from a checkpoint inside a chunk starts with the rest of that chunk."""
        total, size = self.cfg.train.epochs, self.cfg.train.chunk_epochs
        bounds = set(range(0, total, size)) | {total}
        if self.prune_epoch is not None:
            bounds.add(self.prune_epoch)
        if self.finetune_epoch is not None:
            bounds.add(self.finetune_epoch)
        edges = sorted(bounds)
        return [(max(a, start_epoch), b) for a, b in itertools.pairwise(edges) if b > start_epoch]

    @property
    def piece_epochs(self) -> int:
        """Epochs per compiled program. Chunks are trained in pieces on a grid of this size
        (so that a checkpoint can be written between pieces, on a wall-clock interval);
        every piece of a run has this length except at chunk edges off the grid. The
        parameters do not depend on it (an epoch is the same program step however the
        epochs are grouped)."""
        return math.gcd(self.cfg.train.chunk_epochs, PIECE_EPOCHS)

    def pieces(self, first: int, last: int) -> list[tuple[int, int]]:
        """(a, b) epoch ranges covering the chunk (first, last) on the piece grid."""
        size = self.piece_epochs
        edges = sorted({first, last} | set(range(first - first % size + size, last, size)))
        return list(itertools.pairwise(edges))


FIXED_OBJECTIVE = pruning_api.to_objective(fixed(), 0.0)


class FoldModels(NamedTuple):
    """The GCN of a run, one initialization per fold (every fold's model has the same graph,
    so one `apply_fn` serves all of them)."""

    apply_fn: Any
    adjacency: Any
    dims: dict[str, int]  # n_nodes, n_features, n_classes
    latents: list[dict[str, Any]]  # each fold's initial parameters
    keys: list[tuple[jax.Array, jax.Array]]  # each fold's (init, train) keys


def build_fold_models(cfg: RunConfig, ds: SkeletonDataset) -> FoldModels:
    """One (init, train) key pair per fold from the run seed, and each fold's GCN."""
    adjacency = normalized_adjacency(ds.n_nodes, ds.edges)
    dims = {
        "n_nodes": ds.n_nodes,
        "n_features": cfg.features.n_features,
        "n_classes": ds.n_classes,
    }
    keys = [tuple(jax.random.split(key)) for key in fold_keys(cfg.seed, cfg.folds)]
    builds = [
        build_gcn(cfg.model, adjacency=adjacency, key=init_key, **dims) for init_key, _ in keys
    ]
    return FoldModels(builds[0][0], adjacency, dims, [latent for _, latent in builds], keys)


class Run:
    """A configured run, composed of parts with one job each: the `Plan` (method and phase
    schedule), the stacked `FoldData`, the `FoldModels`, the two trainers (the method's, and
    the fixed-mask one of fine-tuning and evaluation after the export) and the stacked initial
    state. `run_training` drives the chunk loop, `export` turns a state into crisp masks and
    `summarize` into `result.json`.
    """

    def __init__(self, cfg: RunConfig, ds: SkeletonDataset) -> None:
        self.cfg = cfg
        self.ds = ds
        self.plan = Plan.of(cfg, ds.n_nodes)
        self.data = make_fold_data(ds, cfg)
        self.models = build_fold_models(cfg, ds)
        self.select = budget_select(cfg)
        _check_excluded(cfg, self.models.latents[0])
        self.prunable_shapes = prunable_parameters(self.models.latents[0])
        n_train = self.data.train.y.shape[1]
        self.trainer = Trainer(
            self.apply_fn, self.plan.soft_train_config(), self.plan.objective(), n_train=n_train
        )
        # Crisp masks at export: the exported network runs on Ŵ ⊙ m with m held in `aux`.
        self.export_trainer = Trainer(self.apply_fn, cfg.train, FIXED_OBJECTIVE, n_train=n_train)
        states = []
        for fold, ((init_key, train_key), latent) in enumerate(
            zip(self.models.keys, self.models.latents, strict=True)
        ):
            method_key = jax.random.fold_in(init_key, 1)
            if self.method is not None and self.method.prepare is not None:
                latent = self.method.prepare(latent, jax.random.fold_in(init_key, 2))
            states.append(
                self.trainer.init_state(
                    latent, self._initial_aux(latent, method_key, fold), train_key
                )
            )
        self.initial_state: TrainState = stack_trees(states)

    # The parts' fields, under the names callers use.
    method = property(lambda self: self.plan.method)
    baseline = property(lambda self: self.plan.baseline)
    prune_epoch = property(lambda self: self.plan.prune_epoch)
    finetune_epoch = property(lambda self: self.plan.finetune_epoch)
    apply_fn = property(lambda self: self.models.apply_fn)
    adjacency = property(lambda self: self.models.adjacency)
    model_dims = property(lambda self: self.models.dims)
    piece_epochs = property(lambda self: self.plan.piece_epochs)

    def chunks(self, start_epoch: int) -> list[tuple[int, int]]:
        """`Plan.chunks`."""
        return self.plan.chunks(start_epoch)

    def pieces(self, first: int, last: int) -> list[tuple[int, int]]:
        """`Plan.pieces`."""
        return self.plan.pieces(first, last)

    def _initial_aux(self, latent: dict[str, Any], key: jax.Array, fold: int) -> Any:
        if self.method is not None:
            return self.method.init(latent, key)
        if self.baseline is None:
            return {}
        if not self.baseline.at_init:
            return fixed().init(latent, key)  # all ones until the pruning epoch
        grads = None
        if self.baseline.needs_grads:
            grads = self._loss_grads(latent, jax.tree.map(lambda a: a[fold], self.data.train))
        return self._select(latent, key, grads)

    def _select(self, latent: dict[str, Any], key: jax.Array, grads: Any) -> dict[str, Any]:
        leaves = {
            n: np.asarray(w) for n, w in pruning_api.prunable_leaves(latent, self.select).items()
        }
        if grads is not None and self.select is not None:
            grads = {n: g for n, g in grads.items() if n in leaves}
        masks = self.baseline.select(
            leaves, self.cfg.target_rate, key=key, grads=grads, options=self.cfg.pruning
        )
        masks = with_excluded(masks, self.prunable_shapes)
        return {n: jnp.asarray(m, jnp.float32) for n, m in masks.items()}

    def _loss_grads(self, latent: dict[str, Any], split: Split) -> dict[str, np.ndarray]:
        """∂CE/∂Ŵ of the prunable tensors on the whole training split (SNIP's saliency)."""

        def ce(params):
            logits = self.apply_fn(params, split.x)
            return weighted_cross_entropy(logits, split.y, split.w)[0]

        grads = jax.grad(ce)(latent)
        return {n: np.asarray(g) for n, g in pruning_api.prunable_leaves(grads).items()}

    def prune(self, state: TrainState) -> TrainState:
        """The pruning step of magnitude / structured pruning at `prune_epoch`: select each
        fold's mask from its trained weights, and restart the optimizer for fine-tuning."""
        aux = []
        for fold, (init_key, _) in enumerate(self.models.keys):
            latent = jax.tree.map(lambda a, f=fold: a[f], state.latent)
            aux.append(self._select(latent, jax.random.fold_in(init_key, 1), None))
        opt_state = jax.vmap(self.trainer.optimizer.init)(state.latent)
        return state._replace(aux=stack_trees(aux), opt_state=opt_state)

    def in_finetune(self, state: TrainState) -> bool:
        """Whether `state` is past the export of a fine-tuned learned method: its `aux` then
        holds the fixed crisp masks (stacked over folds) instead of the method's state."""
        if self.finetune_epoch is None:
            return False
        boundary = self.finetune_epoch * self.trainer.steps_per_epoch
        return int(np.asarray(state.step).ravel()[0]) >= boundary

    def trainer_for(self, first_epoch: int) -> Trainer:
        """The trainer of the chunk that starts at `first_epoch`: the method's, or the fixed
        mask trainer once a fine-tuned learned method has exported its masks."""
        if self.finetune_epoch is not None and first_epoch >= self.finetune_epoch:
            return self.export_trainer
        return self.trainer

    def fix_masks(self, state: TrainState) -> tuple[TrainState, Export]:
        """The switch to fine-tuning: export every fold's crisp masks from the soft state,
        fix them as the state's `aux` and restart the optimizer on the latent weights."""
        export = self._soft_export(state)
        masks = stack_trees(
            [{n: jnp.asarray(m, jnp.float32) for n, m in fm.items()} for fm in export.masks]
        )
        return self._with_fixed_masks(state, masks), export

    def finetune_template(self) -> TrainState:
        """A state of the fine-tuning phase's structure (to restore its checkpoints into)."""
        masks = {
            n: jnp.ones(np.shape(w), jnp.float32)
            for n, w in pruning_api.prunable_leaves(self.initial_state.latent).items()
        }
        return self._with_fixed_masks(self.initial_state, masks)

    def _with_fixed_masks(self, state: TrainState, masks: dict[str, Any]) -> TrainState:
        """`state` with `masks` (stacked over folds) as its aux and a fresh optimizer state
        of the fixed-mask trainer on the latent weights."""
        opt_state = jax.vmap(self.export_trainer.optimizer.init)(state.latent)
        return state._replace(aux=masks, opt_state=opt_state)

    def export(self, state: TrainState, facts: dict[str, Any] | None = None) -> Export:
        """Crisp masks of every fold (docs/methods.md#exact-export exact export for learned methods)
        and the export statistics; dense runs get all-ones masks. A fine-tuned state (`in_finetune`)
        holds its masks already; `facts` (`Export.facts`, saved when the masks were fixed)
        then supply the soft-phase statistics."""
        n_folds = len(self.cfg.folds)
        if self.in_finetune(state):
            aux = jax.device_get(state.aux)
            masks = [{n: np.asarray(m[f]) > 0.5 for n, m in aux.items()} for f in range(n_folds)]
            facts = facts or {}
            nan = [float("nan")] * n_folds
            return Export(
                masks=masks,
                soft_rates=facts.get("soft_rates", nan),
                rounding_changed=facts.get("rounding_changed", [0] * n_folds),
                details=facts.get("details"),
                crisp_fractions=facts.get("crisp_fractions", nan),
            )
        if self.method is not None:
            return self._soft_export(state)
        leaves = self._fold_leaves(state)
        if self.baseline is not None:
            aux = jax.device_get(state.aux)
            masks = [{n: np.asarray(m[f]) > 0.5 for n, m in aux.items()} for f in range(n_folds)]
        else:
            masks = [{n: np.ones(np.shape(w), bool) for n, w in lv.items()} for lv in leaves]
        rates = [realized_rate(m) for m in masks]
        return Export(masks=masks, soft_rates=rates, rounding_changed=[0] * n_folds)

    def _fold_leaves(
        self, state: TrainState, select: pruning_api.Select | None = None
    ) -> list[dict[str, np.ndarray]]:
        """Each fold's prunable latent tensors {path: Ŵ_ℓ} (those `select` picks), as numpy."""
        return [
            pruning_api.prunable_leaves(
                jax.tree.map(lambda a, f=f: np.asarray(a[f]), state.latent), select
            )
            for f in range(len(self.cfg.folds))
        ]

    def _soft_export(self, state: TrainState) -> Export:
        """The learned method's exact export of every fold from its soft masks."""
        n_folds = len(self.cfg.folds)
        leaves = self._fold_leaves(state, self.select)
        ctx = Context(step=state.step[0], total_steps=jnp.asarray(self.trainer.total_steps))
        mask_ctx = pruning_api.MaskContext.from_train(ctx, self.cfg.target_rate)
        soft = jax.device_get(
            jax.vmap(lambda lat, aux: self.method.mask(lat, aux, mask_ctx))(state.latent, state.aux)
        )
        export_fn = self.method.export or exact_export
        custom = self.method.export is not None
        if self.cfg.pruning.consistent_export and self.cfg.method != "tcmp":
            # TCMP's export for any method: the c best-ranked entries that lie on an
            # input→output path, so no budget is spent on dangling connections
            export_fn = functools.partial(
                consistent_export, cfg=self.cfg.model, n_nodes=self.ds.n_nodes
            )
            custom = False
        exports = []
        for f in range(n_folds):
            extra = {}
            if self.method.trainable_aux and custom:
                extra["aux"] = jax.tree.map(lambda a, f=f: np.asarray(a[f]), state.aux)
            fold_soft = {n: m[f] for n, m in soft.items()}
            exports.append(export_fn(fold_soft, leaves[f], self.cfg.target_rate, **extra))
        return Export(
            masks=[with_excluded(e.masks, self.prunable_shapes) for e in exports],
            soft_rates=[e.soft_rate for e in exports],
            rounding_changed=[e.rounding_changed for e in exports],
            details=[e.details for e in exports],
            crisp_fractions=[
                crisp_fraction({n: m[f] for n, m in soft.items()}) for f in range(n_folds)
            ],
        )


class Export(NamedTuple):
    """Per fold: crisp masks {path: bool}, the soft rate before rounding, entries changed,
    a method's export details, and the fraction of soft mask values that were crisp."""

    masks: list[dict[str, np.ndarray]]
    soft_rates: list[float]
    rounding_changed: list[int]
    details: list[dict[str, Any] | None] | None = None
    crisp_fractions: list[float] | None = None

    def facts(self) -> dict[str, Any]:
        """Everything but the masks, as JSON (saved in the checkpoint record when a learned
        method's masks are fixed for fine-tuning)."""
        return {
            "soft_rates": [float(r) for r in self.soft_rates],
            "rounding_changed": [int(r) for r in self.rounding_changed],
            "details": self.details,
            "crisp_fractions": self.crisp_fractions,
        }


CRISP_TOLERANCE = 1e-3


def crisp_fraction(soft_masks: dict[str, Any]) -> float:
    """Fraction of soft mask values within 1e-3 of 0 or 1 (how binary ψ is at export)."""
    values = np.concatenate([np.asarray(m, np.float64).ravel() for m in soft_masks.values()])
    crisp = (values <= CRISP_TOLERANCE) | (values >= 1.0 - CRISP_TOLERANCE)
    return float(np.mean(crisp))


def _check_finite(
    metrics: dict[str, np.ndarray], first_epoch: int, last_good: int | None, ckpt: str
):
    loss = np.asarray(metrics["loss"])  # (folds, epochs)
    if np.isfinite(loss).all():
        return
    fold, epoch = np.argwhere(~np.isfinite(loss))[0]
    kept = (
        f"The last good checkpoint (epoch {last_good}) is kept in {ckpt}"
        if last_good is not None
        else f"No checkpoint had been written yet ({ckpt} is empty)"
    )
    raise DivergenceError(
        f"training diverged: the loss became {loss[fold, epoch]} at epoch "
        f"{first_epoch + epoch + 1} (fold index {fold}). {kept}; lower --lr or change the "
        "schedule and start again with a new --out"
    )


def _poisoned(state: TrainState) -> TrainState:
    """The state with non-finite latent weights (fault injection: a diverging run)."""
    return state._replace(latent=jax.tree.map(lambda x: x * jnp.nan, state.latent))


def resolve_data_dir(dataset: str, data_dir: str | os.PathLike | None) -> str | None:
    """The dataset root a run reads (absolute), as `load_dataset` resolves it; None for the
    synthetic data or when neither --data-dir nor $GCNPRUNE_DATA_DIR says."""
    if dataset == "synthetic":
        return None
    if data_dir is not None:
        return str(Path(data_dir).absolute())
    env = os.environ.get(DATA_DIR_ENV)
    return str((Path(env) / dataset).absolute()) if env else None


def check_out_dir(out: Path) -> None:
    """Refuse an --out that cannot be a run's directory, before any work is done."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"has a file in its path ({parent})"
                raise OutputError(f"--out {out}: {what}; expected a directory (new or a run's)")
            break


def run_training(
    cfg: RunConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    dataset: SkeletonDataset | None = None,
    checkpoint_every_s: float | None = CHECKPOINT_EVERY_S,
) -> dict[str, Any]:
    """Train (and prune) `cfg`; write OUT/result.json, OUT/masks.npz and OUT/checkpoint/.
    Returns the result.

    Checkpoints are written at the end of every chunk and, inside a chunk, between pieces
    once `checkpoint_every_s` seconds have passed since the last one (0: after every piece;
    None: only at chunk ends). A killed run loses at most that interval plus one piece.
    With `resume`, continues from OUT/checkpoint's latest epoch (which must come from the same
    config) and ends with exactly the parameters of an uninterrupted run. On Ctrl-C
    (KeyboardInterrupt) the state of the last finished piece is saved before it propagates.
    """
    reporter = reporter or SilentReporter()
    out = Path(out_dir)
    check_out_dir(out)
    start = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(cfg.dataset, data_dir, seed=cfg.data_seed)
    run = Run(cfg, ds)
    # Only now that data and config are known good: bad input never leaves a directory behind.
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {out}: cannot create the directory ({err})") from None
    ckpt = Checkpointer(out / "checkpoint")
    state, epoch, history, previous_wall_s, previous_train_s = run.initial_state, 0, [], 0.0, 0.0
    facts = None  # the export's statistics, once a fine-tuned method has fixed its masks
    latest = ckpt.latest_epoch()
    if latest is not None:
        if not resume:
            ckpt.close()
            raise ConfigError(
                f"{out} already holds a run (checkpoint at epoch {latest}); pass --resume to "
                "continue it, or choose another --out"
            )
        record = ckpt.read_record(latest)
        # Through from_dict: options added since the run started get their defaults, which
        # reproduce the behaviour before they existed.
        saved = RunConfig.from_dict(record["config"]).to_dict()
        _check_same_config(json.loads(json.dumps(saved)), cfg.to_dict(), out)
        fine_tuning = run.finetune_epoch is not None and record["epoch"] >= run.finetune_epoch
        template = run.finetune_template() if fine_tuning else run.initial_state
        state, record = ckpt.restore(template, latest)
        epoch, history = record["epoch"], record["history"]
        previous_wall_s = record["wall_time_s"]
        previous_train_s = record.get("train_time_s", 0.0)
        facts = record.get("export")
    elif resume:
        print(f"gcnprune: --resume: no checkpoint in {out}; starting at epoch 0", file=sys.stderr)
    saved_epoch = latest
    resolved_data_dir = resolve_data_dir(cfg.dataset, data_dir)
    train_s = 0.0

    def save() -> None:
        nonlocal saved_epoch, last_save
        record = {
            "config": cfg.to_dict(),
            "epoch": epoch,
            "history": history,
            "wall_time_s": previous_wall_s + time.perf_counter() - start,
            "train_time_s": previous_train_s + train_s,
        }
        if resolved_data_dir is not None:
            record["data_dir"] = resolved_data_dir
        if facts is not None:
            record["export"] = facts
        ckpt.save(epoch, state, record)
        saved_epoch, last_save = epoch, time.perf_counter()

    reporter.start(cfg.train.epochs, epoch, f"{cfg.dataset} {cfg.method}")
    last_save, poison_next, resumable = time.perf_counter(), False, True
    try:
        for first, last in run.chunks(epoch):
            trainer = run.trainer_for(first)
            for a, b in run.pieces(first, last):
                t0 = time.perf_counter()
                start_state = _poisoned(state) if poison_next else state
                new_state, metrics = trainer.train_chunk(start_state, run.data, b - a)
                metrics = jax.device_get(metrics)
                train_s += time.perf_counter() - t0
                _check_finite(metrics, a, saved_epoch, ckpt.directory)
                # A state at a chunk's end is resumable only once its pruning or export step
                # and its history entry are done (just before its checkpoint).
                state, epoch, resumable = new_state, b, b < last
                poison_next = faults.hit("piece") == "nan"
                due = checkpoint_every_s is not None and (
                    time.perf_counter() - last_save >= checkpoint_every_s
                )
                if b < last and due:
                    save()
            if last == run.prune_epoch:
                state = run.prune(state)
            if last == run.finetune_epoch:
                state, export = run.fix_masks(state)
                facts = export.facts()
            trainer = run.trainer_for(last)
            test = jax.device_get(trainer.evaluate(state, run.data.test))
            summary = {
                "epoch": last,
                "loss": float(np.mean(metrics["loss"][:, -1])),
                "train_accuracy": float(np.mean(metrics["train_accuracy"][:, -1])),
                "test_accuracy_monitor": float(np.mean(test["accuracy"])),
                "learning_rate": float(np.mean(learning_rate(state.opt_state, trainer.cfg))),
            }
            if run.data.val is not None:
                val = jax.device_get(trainer.evaluate(state, run.data.val))
                summary["val_accuracy_monitor"] = float(np.mean(val["accuracy"]))
            history.append(summary)
            resumable = True
            save()
            reporter.update(epoch, summary)
    except KeyboardInterrupt:
        # Keep the last finished piece: the interrupt may have come during a write (let it
        # complete) or between pieces (write the state held in memory).
        ckpt.finish()
        if resumable and ckpt.latest_epoch() != epoch:
            save()
        kept = ckpt.latest_epoch()
        print(
            f"gcnprune: interrupted after epoch {epoch}; "
            + (
                f"the checkpoint of epoch {kept} is in {ckpt.directory}"
                if kept is not None
                else "no checkpoint had been written yet"
            ),
            file=sys.stderr,
        )
        raise
    finally:
        reporter.close()
        ckpt.close()

    result, export = summarize(run, state, history, facts)
    try:
        write_masks(out, export, cfg.folds)
        result["wall_time_s"] = previous_wall_s + time.perf_counter() - start
        result["train_time_s"] = previous_train_s + train_s
        if resolved_data_dir is not None:
            result["data_dir"] = resolved_data_dir
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    except OSError as err:
        raise OutputError(
            f"cannot write the results to {out} ({err}); the trained state is kept in "
            f"{ckpt.directory}: continue with --resume once the directory is writable"
        ) from None
    return result


def write_masks(out: Path, export: Export, folds: tuple[int, ...]) -> None:
    """OUT/masks.npz (INTERFACE.md): one boolean array per prunable tensor, keyed by path.
    It holds the first trained fold's masks; a run over several folds (SBU --fold all) also
    writes masks_fold<k>.npz for every fold k (1-based), since each fold prunes its own net."""
    np.savez_compressed(out / "masks.npz", **export.masks[0])
    if len(folds) > 1:
        for k, masks in zip(folds, export.masks, strict=True):
            np.savez_compressed(out / f"masks_fold{k + 1}.npz", **masks)


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


def summarize(
    run: Run,
    state: TrainState,
    history: list[dict[str, Any]],
    facts: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Export]:
    """result.json fields (INTERFACE.md) of the exported network, and the export itself.

    Accuracy is the exported (crisp-masked) network's. With several folds (SBU), accuracy and
    FLOPs are fold means, `rounding_changed` the sum and `dangling_connections` the largest
    count over folds (so a nonzero count in any fold shows); per-fold values are listed too.
    """
    cfg = run.cfg
    export = run.export(state, facts)
    fine_tuned = run.in_finetune(state)
    if run.method is None and run.baseline is None:
        trainer, eval_state = run.trainer, state
    else:
        aux = stack_trees(
            [{n: jnp.asarray(m, jnp.float32) for n, m in fm.items()} for fm in export.masks]
        )
        trainer, eval_state = run.export_trainer, state._replace(aux=aux)
    test = jax.device_get(trainer.evaluate(eval_state, run.data.test))
    train = jax.device_get(trainer.evaluate(eval_state, run.data.train))
    val = None
    if run.data.val is not None:
        val = jax.device_get(trainer.evaluate(eval_state, run.data.val))
    dims = run.model_dims
    n_total = int(sum(m.size for m in export.masks[0].values()))
    kept = [int(sum(int(m.sum()) for m in fm.values())) for fm in export.masks]
    flops = dense_flops(cfg.model, **dims)
    unstructured = [flops_unstructured(fm, cfg.model, **dims) for fm in export.masks]
    structured = [flops_structured(fm, cfg.model, **dims) for fm in export.masks]
    dangling = [dangling_connections(fm, cfg.model, n_nodes=dims["n_nodes"]) for fm in export.masks]
    fold_acc = [float(a) for a in test["accuracy"]]
    result = {
        "dataset": cfg.dataset,
        "method": cfg.method,
        "target_rate": cfg.target_rate,
        "realized_rate": 1.0 - float(np.mean(kept)) / n_total,
        "soft_rate": float(np.mean(export.soft_rates)),
        "rounding_changed": int(sum(export.rounding_changed)),
        "accuracy": float(np.mean(fold_acc)),
        "fold_accuracies": fold_acc,
        "folds": [k + 1 for k in cfg.folds],
        "train_accuracies": [float(a) for a in train["accuracy"]],
        "params_total": n_total,
        "params_kept": round(float(np.mean(kept))),
        "flops_dense": flops,
        "flops_unstructured": round(float(np.mean(unstructured))),
        "flops_structured": round(float(np.mean(structured))),
        "dangling_connections": int(max(dangling)),
        "epochs": cfg.train.epochs,
        "seed": cfg.seed,
        "params_digest": params_digest(
            state.latent if fine_tuned else run.trainer.trained(state.latent, state.aux)
        ),
    }
    if val is not None:
        result["val_accuracy"] = float(np.mean(val["accuracy"]))
        result["fold_val_accuracies"] = [float(a) for a in val["accuracy"]]
        result["val_fraction"] = cfg.val_fraction
    if export.crisp_fractions is not None:
        result["crisp_fraction"] = float(np.mean(export.crisp_fractions))
    if run.finetune_epoch is not None:
        result["finetune_epoch"] = run.finetune_epoch
    details = export.details or []
    if details and details[0] is not None and "granularity" in details[0]:
        # SSP (INTERFACE.md): what each channel's gate chose, for the first fold listed
        result["granularity"] = details[0]["granularity"]
        result["granularity_overridden"] = details[0].get("overridden", [])
        if len(details) > 1:
            result["fold_granularity"] = [d["granularity"] for d in details]
    if run.method is not None and not fine_tuned:
        soft = jax.device_get(run.trainer.evaluate(state, run.data.test))
        if run.trainer.objective.n_rates:
            # the monitor of multi-rate training: mean over its training rates
            result["trained_rates"] = list(cfg.pruning.rates)
            result["soft_accuracy_mean_over_trained_rates"] = float(np.mean(soft["accuracy"]))
        else:
            result["soft_accuracy"] = float(np.mean(soft["accuracy"]))
    if run.prune_epoch is not None:
        result["prune_epoch"] = run.prune_epoch
    if len(cfg.folds) > 1:
        result["fold_soft_rates"] = [float(r) for r in export.soft_rates]
        result["fold_rounding_changed"] = [int(r) for r in export.rounding_changed]
        result["fold_flops_structured"] = structured
        result["fold_dangling_connections"] = dangling
    result["history"] = history
    result["config"] = cfg.to_dict()
    return result, export


def recorded_data_dir(record: dict[str, Any], data_dir: str | None) -> str | None:
    """The data directory to re-read a saved run with: `data_dir` when given (--data-dir
    overrides), else the one the run recorded if it still exists, else None (the default,
    $GCNPRUNE_DATA_DIR/<dataset>)."""
    if data_dir is not None:
        return data_dir
    recorded = record.get("data_dir")
    if recorded is not None and Path(recorded).is_dir():
        return recorded
    return None


def load_checkpoint(
    path: str | os.PathLike, *, data_dir: str | None = None, rate: float | None = None
) -> tuple[Run, TrainState, dict[str, Any]]:
    """The configured run, its restored state and its checkpoint record, from a run's output
    directory (or its checkpoint/ folder). rate: as in `evaluate_checkpoint`."""
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
        if rate is not None and rate != cfg.target_rate:
            if cfg.method != "mrmp":
                raise ConfigError(
                    f"--rate {rate}: this checkpoint holds a {cfg.method} run at rate "
                    f"{cfg.target_rate}; only multi-rate (mrmp) runs serve other rates"
                )
            cfg = cfg.replace(target_rate=rate)
        ds = load_dataset(cfg.dataset, recorded_data_dir(record, data_dir), seed=cfg.data_seed)
        run = Run(cfg, ds)
        fine_tuning = run.finetune_epoch is not None and record["epoch"] >= run.finetune_epoch
        template = run.finetune_template() if fine_tuning else run.initial_state
        state, record = ckpt.restore(template)
    finally:
        ckpt.close()
    return run, state, record


def evaluate_checkpoint(
    path: str | os.PathLike, *, data_dir: str | None = None, rate: float | None = None
) -> dict[str, Any]:
    """Re-evaluate a saved run (its output directory or its checkpoint/ folder) from the
    config and state its checkpoint holds; returns the result fields.

    rate: export and evaluate at this pruning rate instead of the run's own. Only multi-rate
    (mrmp) runs serve other rates (docs/methods.md#mrmp: any rate without retraining); any other run
    refuses a rate different from its own.
    """
    run, state, record = load_checkpoint(path, data_dir=data_dir, rate=rate)
    result, _ = summarize(run, state, record["history"], record.get("export"))
    result["epochs_trained"] = record["epoch"]
    return result
