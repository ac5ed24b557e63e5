"""Prune a model of your own: any `apply(params, x) -> logits`, any registered method, the
project's compiled train step (`train.Trainer`), no `Run` and no fold axis.

    from gcnprune_jax import fit
    pruned = fit.prune(apply, params, "ctf", 0.95, (x, y), select=select, epochs=300)
    logits = apply(pruned.params, x_test)        # the pruned network, crisp masks applied
    pruned.save_masks("masks.npz")               # {leaf path: bool mask}, exactly the rate

The schedule follows the method's (`PruningMethod.schedule`), as `gcnprune prune` trains it:
- `soft` (ctf, ssp, tcmp, pmp, your own learned method): soft masks for the first
  `1 − finetune` of the epochs (the method's temperature and budget schedules span that
  phase), the method's exact export at exactly the target rate, then fine-tuning with the
  crisp masks fixed for the rest;
- `prune_then_finetune` (magnitude, structured): dense training for `prune_at` of the epochs,
  the crisp masks selected from the trained weights, fine-tuning with them fixed;
- `sparse_from_init` (random): the masks chosen at initialization, fixed throughout;
- `dense`: no pruning.
- MRMP (`"mrmp"`, its training rates given as `rates=`): one soft training for all of them
  at once, exported at `target_rate`; `pruned.serve(rate)` exports the same training at any
  other rate without retraining (no fine-tuning, which would fix one rate's masks).

A method's defaults were chosen on this project's GCN; for a model of your own, `choose` picks
its options (e.g. the budget weight `lam`) on validation accuracy and retrains with them:

    choice = fit.choose(apply, params, "ctf", 0.9, (x, y), (x_val, y_val), {"lam": [1, 10, 100]})
    choice.settings, choice.trials, choice.pruned   # chosen options, every trial, the refit
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

from gcnprune_jax import chain as chain_lib
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.baselines import fixed
from gcnprune_jax.pruning.pmp import DEFAULT_RATES, check_rates
from gcnprune_jax.pruning.shared import exact_export, realized_rate
from gcnprune_jax.train import Context, Split, TrainConfig, Trainer, TrainState

Params = Any
# A soft phase whose last epoch's cross-entropy is above this fraction of its first epoch's
# did not learn (`StallWarning`).
STALL = 0.9


class StallWarning(UserWarning):
    """A learned method's soft phase left the training cross-entropy where it started."""


@dataclasses.dataclass(frozen=True)
class Pruned:
    """What `prune` returns.

    params: the pruned network's parameters, `latent` with the crisp masks applied (run it
      with your `apply`); latent: the trained latent parameters; masks: {leaf path: bool
      array}, exactly `target_rate` of the selected entries pruned; realized_rate;
      soft_rate, rounding_changed, crisp_fraction: how far the soft masks were from the
      export (learned methods; None otherwise); export_epoch: the epoch at which the masks
      were fixed (None: dense); history: per chunk of epochs, the mean training `loss`, `ce`,
      `penalty`, `train_accuracy` and, with `val`, `val_accuracy` of the network as it
      trains (soft masks before the export); dangling_connections and flops (`dense`,
      `unstructured`, `structured` per sample) when the model's `chain` was given (else
      None); serve: MRMP only, `serve(rate)` is the same training exported at `rate` (no
      retraining; during MRMP's training `val_accuracy` is the mean over its rates)."""

    params: Params
    latent: Params
    masks: dict[str, np.ndarray]
    target_rate: float
    realized_rate: float
    soft_rate: float | None
    rounding_changed: int | None
    crisp_fraction: float | None
    export_epoch: int | None
    history: list[dict[str, float]]
    dangling_connections: int | None = None
    flops: dict[str, int] | None = None
    # MRMP: rate -> the same training exported at that rate (None for other methods)
    serve: Callable[[float], Pruned] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def save_masks(self, path: str | Path) -> Path:
        """Write the crisp masks as `masks.npz` does (one bool array per leaf path)."""
        path = Path(path)
        np.savez_compressed(path, **self.masks)
        return path


def _split(data: Sequence[Any], what: str) -> Split:
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ConfigError(f"{what}: give (x, y) or (x, y, w) arrays, got {type(data).__name__}")
    x, y = jnp.asarray(data[0], jnp.float32), jnp.asarray(data[1], jnp.int32)
    w = jnp.ones(y.shape, jnp.float32) if len(data) == 2 else jnp.asarray(data[2], jnp.float32)
    if y.ndim != 1 or x.shape[0] != y.shape[0] or w.shape != y.shape:
        raise ConfigError(
            f"{what}: x has {x.shape[0] if x.ndim else 0} samples, y shape {y.shape}, w shape "
            f"{w.shape}; expected x (N, ...), y (N,) integer labels, w (N,)"
        )
    return Split(x, y, w)


def _has_convolution(apply: Callable[..., Any], params: Params, x: jax.Array) -> bool:
    """Whether `apply(params, x[:1])` runs a convolution (in any nested jaxpr)."""

    def found(jaxpr: Any) -> bool:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                return True
            for sub in jax_core.jaxprs_in_params(eqn.params):
                if found(sub):
                    return True
        return False

    return found(jax.make_jaxpr(apply)(params, x[:1]).jaxpr)


def prune(
    apply: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    method: str | api.PruningMethod,
    target_rate: float,
    train: Sequence[Any],
    *,
    val: Sequence[Any] | None = None,
    epochs: int = 300,
    train_config: TrainConfig | None = None,
    finetune: float | None = None,
    prune_at: float = 0.5,
    seed: int = 0,
    select: api.Select | None = None,
    chain: chain_lib.Chain | None = None,
    epoch_loop: str = "auto",
    **hyper: Any,
) -> Pruned:
    """Train `params` for `apply` on `train` = (x, y) or (x, y, w) with `method` at
    `target_rate`, export crisp masks at exactly that rate and fine-tune (module docstring).

    method: a registered name (`api.names()`; built with `api.get(name, select=select,
      **hyper)`) or a `PruningMethod` (then `select` and `hyper` must not be given). MRMP is
      given by name with its training rates, e.g. `rates=(0.5, 0.9, 0.99)` (default
      `pruning.pmp.DEFAULT_RATES`), and serves other rates through `Pruned.serve`.
    train_config: optimizer settings (`train.TrainConfig`; its `epochs` is replaced by
      `epochs`); default: Adam at 1e-3, full batch, the adaptive learning-rate rule.
    finetune: soft methods' fraction of the epochs spent fine-tuning with the crisp masks
      fixed; default: the method's (`config.method_defaults`, e.g. 0.5 for PMP), else 0.
    prune_at: magnitude / structured: the fraction of the epochs trained dense before the
      masks are selected.
    chain: the feature path of your model (`chain.Chain`, e.g. `chain.sequential`): the
      default `select` becomes its tensors, TCMP reads it (`model=chain`), SSP keeps the
      last link's columns (the logits: `logit_layer=`), and the result
      counts dangling connections and FLOPs (docs/api.md, "Your own model's chain").
    epoch_loop: `Trainer`'s: "scan" (a chunk of epochs is one compiled loop), "python" (one
      compiled epoch called per epoch), or "auto": "python" on CPU when `apply` contains a
      convolution (XLA:CPU runs one 20x slower inside a loop body: an ST-GCN-like model
      trained 4.8 s per epoch in a scan against 0.24 s outside, jax-ml/jax#12868), else "scan".
    The apply function is called as `apply(params, x)` inside the compiled step (no dropout
      key: a model with dropout should take it from its own state). Same inputs and seed,
      same machine: the same result, bit for bit.
    """
    from gcnprune_jax.config import method_defaults
    from gcnprune_jax.runner import crisp_fraction

    if chain is not None and not isinstance(chain, chain_lib.Chain):
        raise ConfigError(f"prune: chain must be a chain.Chain, got {type(chain).__name__}")
    if chain is not None and select is None:
        select = chain.select()
    rates = None  # MRMP's training rates
    if isinstance(method, str):
        name = method
        if name == "mrmp":
            rates = check_rates(hyper.get("rates", DEFAULT_RATES))
        if name == "tcmp" and "model" not in hyper:
            if chain is None:
                raise ConfigError(
                    "prune: TCMP keeps only connections on an input→output path, so it needs "
                    "your model's feature path: pass chain=chain.Chain(...) (docs/api.md, "
                    '"Your own model\'s chain")'
                )
            hyper["model"] = chain
        if name == "ssp" and chain is not None and "logit_layer" not in hyper:
            hyper["logit_layer"] = chain.links[-1].path
        method = api.get(name, **({"select": select} if select is not None else {}), **hyper)
        default_finetune = method_defaults(name).get("finetune", 0.0)
    else:
        if select is not None or hyper:
            raise ConfigError(
                "prune: select and method options go to api.get; a PruningMethod given as "
                "`method` carries its own"
            )
        default_finetune = 0.0
    if method.name == "mrmp":
        if rates is None:
            raise ConfigError(
                'prune: give MRMP by name ("mrmp", rates=(...)): its training rates are not '
                "part of a PruningMethod"
            )
        if finetune:
            raise ConfigError(
                "prune: MRMP serves every rate from one training, and fine-tuning would fix one "
                "rate's masks; use finetune=0 with mrmp"
            )
    if not 0.0 <= float(target_rate) < 1.0:
        raise ConfigError(f"prune: target_rate must be in [0, 1), got {target_rate}")
    finetune = default_finetune if finetune is None else float(finetune)
    if not 0.0 <= finetune < 1.0 or not 0.0 < prune_at < 1.0:
        raise ConfigError(
            f"prune: finetune must be in [0, 1) and prune_at in (0, 1), got {finetune}, {prune_at}"
        )
    if epochs < 2 and method.schedule != "dense":
        raise ConfigError(f"prune: epochs={epochs}; pruning with fine-tuning needs at least 2")
    train_split = _split(train, "train")
    val_split = None if val is None else _split(val, "val")
    leaves = api.prunable_leaves(params, method.select)
    if not leaves:
        raise ConfigError(
            "prune: no leaf of params is selected for pruning; pass select=(path, leaf) -> bool "
            "(docs/api.md#pruning-a-model-of-your-own)"
        )

    cfg = dataclasses.replace(train_config or TrainConfig(), epochs=epochs)
    export_epoch = {
        "soft": epochs - round(finetune * epochs),
        "prune_then_finetune": round(prune_at * epochs),
        "sparse_from_init": 0,
        "dense": epochs,
    }[method.schedule]
    export_epoch = min(max(export_epoch, 0 if method.schedule != "soft" else 1), epochs)

    def apply3(p: Params, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        del key
        return apply(p, x)

    if epoch_loop == "auto":
        slow = jax.default_backend() == "cpu" and _has_convolution(apply, params, train_split.x)
        epoch_loop = "python" if slow else "scan"
    n_train = int(train_split.y.shape[0])
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    latent = params
    if method.prepare is not None:
        latent = method.prepare(latent, jax.random.fold_in(init_key, 2))
    soft_cfg = dataclasses.replace(cfg, epochs=max(export_epoch, 1))
    objective = (
        api.to_objective(method, target_rate)
        if rates is None
        else api.to_multi_rate_objective(method, rates)
    )
    first = Trainer(
        apply3,
        soft_cfg if method.schedule == "soft" else cfg,
        objective,
        n_train=n_train,
        fold_axis=False,
        epoch_loop=epoch_loop,
    )
    state = first.init_state(
        latent, method.init(latent, jax.random.fold_in(init_key, 1)), train_key
    )
    history: list[dict[str, float]] = []
    ce_ends: list[float] = []  # the soft phase's first and last per-epoch cross-entropy

    def run(trainer: Trainer, state: TrainState, start: int, stop: int) -> TrainState:
        epoch = start
        while epoch < stop:
            n = min(cfg.chunk_epochs, stop - epoch)
            state, metrics = trainer.train_chunk(state, train_split, n)
            if trainer is first and "ce" in metrics:
                ce = np.asarray(metrics["ce"], np.float64).ravel()
                ce_ends[:] = [ce_ends[0] if ce_ends else float(ce[0]), float(ce[-1])]
            epoch += n
            record = {"epoch": epoch, **{k: float(np.mean(v)) for k, v in metrics.items()}}
            if val_split is not None:
                record["val_accuracy"] = float(trainer.evaluate(state, val_split)["accuracy"])
            history.append(record)
        return state

    state = run(first, state, 0, export_epoch)
    if method.schedule == "soft" and len(ce_ends) == 2 and ce_ends[1] > STALL * ce_ends[0]:
        warnings.warn(
            f"prune: {method.name}'s training cross-entropy went from {ce_ends[0]:.3f} to "
            f"{ce_ends[1]:.3f} over its soft phase ({export_epoch} epochs): its penalty may "
            "outweigh the cross-entropy on this model (the defaults were chosen on this "
            "project's GCN). Check `history`; fit.choose picks `lam=` and other options on "
            "validation data (docs/api.md)",
            StallWarning,
            stacklevel=2,
        )

    # what a crisp (dense or baseline) export reports of the soft masks: nothing
    no_stats = {"soft_rate": None, "rounding_changed": None, "crisp_fraction": None}

    def export_at(rate: float, trained: TrainState) -> tuple[dict[str, np.ndarray], dict]:
        """The method's exact export of the soft state `trained` at `rate`: crisp masks and
        (soft methods) how far the soft masks were from them."""
        ctx = api.MaskContext.from_train(
            Context(step=trained.step, total_steps=jnp.asarray(first.total_steps)), rate
        )
        soft = jax.device_get(method.mask(trained.latent, trained.aux, ctx))
        current = {
            n: np.asarray(w) for n, w in api.prunable_leaves(trained.latent, method.select).items()
        }
        export_fn = method.export or exact_export
        extra = {}
        if method.trainable_aux and method.export is not None:
            extra["aux"] = jax.device_get(trained.aux)
        exported = export_fn(soft, current, rate, **extra)
        stats = dict(no_stats)
        if method.schedule == "soft":
            stats = {
                "soft_rate": float(exported.soft_rate),
                "rounding_changed": int(exported.rounding_changed),
                "crisp_fraction": crisp_fraction(soft),
            }
        return {n: np.asarray(m, bool) for n, m in exported.masks.items()}, stats

    def result(rate: float, latent: Params, masks: dict[str, np.ndarray], stats: dict, serve):
        dangling = flops = None
        if chain is not None:
            full = chain.full(masks)
            dangling = chain_lib.dangling_connections(chain, full)
            flops = {
                "dense": chain_lib.dense_flops(chain),
                "unstructured": chain_lib.flops_unstructured(chain, full),
                "structured": chain_lib.flops_structured(chain, full),
            }
        return Pruned(
            params=api.apply_masks(latent, masks, method.select),
            latent=latent,
            masks=masks,
            target_rate=float(rate),
            realized_rate=realized_rate(masks),
            export_epoch=None if method.schedule == "dense" else export_epoch,
            history=history,
            dangling_connections=dangling,
            flops=flops,
            serve=serve,
            **stats,
        )

    if method.schedule == "dense":
        masks = {n: np.ones(np.shape(w), bool) for n, w in leaves.items()}
        return result(target_rate, state.latent, masks, dict(no_stats), None)
    masks, stats = export_at(target_rate, state)
    if rates is not None:  # MRMP: no fine-tuning; any rate is served from this training

        def serve(rate: float) -> Pruned:
            if not 0.0 <= float(rate) < 1.0:
                raise ConfigError(f"serve: rate must be in [0, 1), got {rate}")
            return result(rate, state.latent, *export_at(rate, state), serve)

        return result(target_rate, state.latent, masks, stats, serve)
    # fine-tuning: the crisp masks held fixed as the state's aux, a fresh optimizer
    second = Trainer(
        apply3,
        cfg,
        api.to_objective(fixed(method.select), 0.0),
        n_train=n_train,
        fold_axis=False,
        epoch_loop=epoch_loop,
    )
    fixed_masks = {n: jnp.asarray(m, jnp.float32) for n, m in masks.items()}
    state = TrainState(
        state.latent, second.optimizer.init(state.latent), fixed_masks, state.step, state.key
    )
    state = run(second, state, export_epoch, epochs)
    return result(target_rate, state.latent, masks, stats, None)


@dataclasses.dataclass(frozen=True)
class Choice:
    """What `choose` returns.

    settings: the chosen options (one value per key of the grid); trials: one dict per
      setting tried, in grid order: its options, `val_accuracy` (of the pruned network after
      fine-tuning, on the validation data), `realized_rate`, `soft_rate`, `stalled` (the soft
      phase's cross-entropy did not fall: `StallWarning`); pruned: `prune` with the chosen
      settings, trained on the training and validation data together (`refit=True`), else
      the chosen trial's own result.
    """

    settings: dict[str, Any]
    trials: list[dict[str, Any]]
    pruned: Pruned


def accuracy(
    apply: Callable[[Params, jax.Array], jax.Array], params: Params, data: Sequence[Any]
) -> float:
    """Top-1 accuracy of `apply(params, x)` on data = (x, y) (or (x, y, w): w ignored),
    in batches of 1024."""
    split = _split(data, "data")
    predict = jax.jit(lambda p, xb: jnp.argmax(apply(p, xb), axis=-1))
    hits = 0
    for start in range(0, int(split.y.shape[0]), 1024):
        xb, yb = split.x[start : start + 1024], split.y[start : start + 1024]
        hits += int(jnp.sum(predict(params, xb) == yb))
    return hits / int(split.y.shape[0])


def choose(
    apply: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    method: str,
    target_rate: float,
    train: Sequence[Any],
    val: Sequence[Any],
    grid: Mapping[str, Sequence[Any]],
    *,
    refit: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **prune_options: Any,
) -> Choice:
    """Choose a method's options for your model on validation data, then retrain with them.

    Every combination of `grid` (e.g. {"lam": [1, 10, 100]}: the options of `api.get(method)`,
    or `prune`'s own `finetune` / `prune_at`) is trained by `prune` on `train` with
    `prune_options` (epochs, seed, chain, select, ...); each pruned network is scored on
    `val`, which no trial trains on. The highest validation accuracy wins (ties: the first in
    grid order). With `refit`, the chosen settings are trained again on train and val
    together, so the returned network has seen all the labelled data; score it on a test split
    that no choice has read. `progress` gets each trial's record as it finishes.
    Costs one `prune` per combination, plus one for the refit.
    """
    if not isinstance(method, str):
        raise ConfigError("choose: method must be a registered name (api.names())")
    if not grid or any(isinstance(v, str) or len(v) == 0 for v in grid.values()):
        raise ConfigError(
            f"choose: grid must map option names to non-empty lists of values, got {dict(grid)}"
        )
    clash = sorted(set(grid) & set(prune_options))
    if clash:
        raise ConfigError(f"choose: {clash} given both in grid and as a fixed option")
    val_split = _split(val, "val")
    keys = list(grid)
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], Pruned] | None = None
    for values in itertools.product(*(list(grid[k]) for k in keys)):
        settings = dict(zip(keys, values, strict=True))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StallWarning)
            pruned = prune(apply, params, method, target_rate, train, **prune_options, **settings)
        for w in caught:  # a stall goes into the trial's record; anything else is shown
            if not issubclass(w.category, StallWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        score = accuracy(apply, pruned.params, (val_split.x, val_split.y))
        record = {
            **settings,
            "val_accuracy": score,
            "realized_rate": pruned.realized_rate,
            "soft_rate": pruned.soft_rate,
            "stalled": any(issubclass(w.category, StallWarning) for w in caught),
        }
        trials.append(record)
        if progress is not None:
            progress(record)
        if best is None or score > best[0]:
            best = (score, settings, pruned)
    assert best is not None
    _, settings, pruned = best
    if refit:
        train_split = _split(train, "train")
        joined = (
            jnp.concatenate([train_split.x, val_split.x]),
            jnp.concatenate([train_split.y, val_split.y]),
            jnp.concatenate([train_split.w, val_split.w]),
        )
        pruned = prune(apply, params, method, target_rate, joined, **prune_options, **settings)
    return Choice(settings=settings, trials=trials, pruned=pruned)
