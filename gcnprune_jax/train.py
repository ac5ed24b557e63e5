"""The one jit-compiled training program shared by every method (pure core; no I/O).

A method plugs in as an `Objective`: a transform from latent to effective parameters
(docs/methods.md#budget-loss: W = Ŵ ⊙ ψ(Ŵ)) and extra loss terms (budget, rank, alignment). The
train step, the epoch loop (a `lax.scan` inside one compiled program) and the fold axis (`vmap`) are
the same for all of them.

Shapes: a `Split` holds x (N, V, F), y (N,), w (N,) with w = 0 on padding rows, so folds of
different sizes stack into one array and train together; the padded rows add nothing to any
loss, gradient or accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnprune_jax.errors import ConfigError

Params = dict[str, Any]
SCHEDULES = ("adaptive", "adaptive2", "constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimization settings. Defaults follow the author's recipe (docs/methods.md#the-gcn) where it
    is stated.

    epochs: passes over the training set.
    learning_rate: Adam's initial step size.
    schedule: "adaptive" (the author's rule as first reconstructed: x `adaptive_factor` when
      the loss rose since the previous step, / `adaptive_factor` otherwise), "adaptive2" (the
      rule as worded in the author's 2025 paper: x `adaptive_factor` upon an increase in the
      loss's temporal derivative, i.e. when L_t − L_{t−1} > L_{t−1} − L_{t−2}, / otherwise),
      "constant" or "cosine" (decay to 0).
    batch_size: 0 = full batch (the author's batches of 200 / 600 are essentially full-batch).
    weight_decay: decoupled (AdamW-style) decay; 0 as the author.
    label_smoothing: 0 as the author.
    chunk_epochs: epochs per compiled `lax.scan` chunk; progress, divergence checks and
      checkpoints happen between chunks, so it also fixes where a resumed run restarts.
    """

    epochs: int = 1000
    learning_rate: float = 1e-3
    schedule: str = "adaptive"
    adaptive_factor: float = 0.99
    batch_size: int = 0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    chunk_epochs: int = 100

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 < self.adaptive_factor <= 1.0:
            raise ConfigError(
                f"train.adaptive_factor must be in (0, 1], got {self.adaptive_factor}"
            )
        if self.batch_size < 0:
            raise ConfigError(
                f"train.batch_size must be >= 0 (0 = full batch), got {self.batch_size}"
            )
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("train.weight_decay must be >= 0 and label_smoothing in [0, 1)")
        if self.chunk_epochs < 1:
            raise ConfigError(f"train.chunk_epochs must be >= 1, got {self.chunk_epochs}")


class Split(NamedTuple):
    """One split of node signals: x (N, V, F) float32, y (N,) int32, w (N,) float32 weights."""

    x: jax.Array
    y: jax.Array
    w: jax.Array


class FoldData(NamedTuple):
    """Train and test splits of one fold (or, with a leading axis, of all folds), and the
    validation part held out of the training split (None when none is held out)."""

    train: Split
    test: Split
    val: Split | None = None


class Context(NamedTuple):
    """What a mask may depend on besides the latent parameters
    (docs/methods.md#thresholds-and-temperature): the step and
    the training length, from which annealed temperatures are derived."""

    step: jax.Array
    total_steps: jax.Array


class Objective(NamedTuple):
    """A method's contribution to the train step.

    transform(latent, aux, ctx) -> effective params fed to the network.
    penalty(latent, aux, ctx) -> scalar added to the cross-entropy.
    both(latent, aux, ctx) -> (effective params, penalty), optional: what the train step
      calls when given, so that work shared by the two (the masks) is traced once.
    n_rates: 0 for one network; R > 0 when `transform` returns R effective networks stacked
      on a leading axis (one-shot multi-rate training, docs/methods.md#mrmp): the cross-entropy is
      then the mean over the R networks, run with `vmap`, and accuracies are means over them.
    trainable_aux: False: the method state `aux` is held fixed. True: `aux` is a pair
      (frozen, trainable) and the optimizer trains `trainable` together with the latent
      parameters (e.g. SSP's gate logits, docs/methods.md#ssp); the optimizer state then covers
      (latent, trainable).
    """

    transform: Callable[[Params, Any, Context], Params]
    penalty: Callable[[Params, Any, Context], jax.Array]
    both: Callable[[Params, Any, Context], tuple[Params, jax.Array]] | None = None
    n_rates: int = 0
    trainable_aux: bool = False

    def transform_and_penalty(
        self, latent: Params, aux: Any, ctx: Context
    ) -> tuple[Params, jax.Array]:
        if self.both is not None:
            return self.both(latent, aux, ctx)
        return self.transform(latent, aux, ctx), self.penalty(latent, aux, ctx)


def _identity(latent: Params, aux: Any, ctx: Context) -> Params:
    del aux, ctx
    return latent


def _no_penalty(latent: Params, aux: Any, ctx: Context) -> jax.Array:
    del latent, aux, ctx
    return jnp.zeros((), jnp.float32)


DENSE = Objective(transform=_identity, penalty=_no_penalty)


class TrainState(NamedTuple):
    """Everything a resumed run needs: latent params, optimizer and method state, step, key."""

    latent: Params
    opt_state: Any
    aux: Any
    step: jax.Array
    key: jax.Array


class LossTrendState(NamedTuple):
    scale: jax.Array
    previous_loss: jax.Array


def scale_by_loss_trend(factor: float = 0.99) -> optax.GradientTransformationExtraArgs:
    """The author's adaptive rate: scale x factor when the loss rose, / factor otherwise.

    Needs the current loss as `value=` in `update` (as `optax.contrib.reduce_on_plateau`).
    The first step has no previous loss and keeps the scale.
    """

    def init(params: Params) -> LossTrendState:
        del params
        return LossTrendState(jnp.ones((), jnp.float32), jnp.full((), jnp.inf, jnp.float32))

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        value = jnp.asarray(value, jnp.float32)
        rose = value > state.previous_loss
        first = jnp.isinf(state.previous_loss)
        scale = jnp.where(
            first, state.scale, jnp.where(rose, state.scale * factor, state.scale / factor)
        )
        updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
        return updates, LossTrendState(scale, value)

    return optax.GradientTransformationExtraArgs(init, update)


class LossCurvatureState(NamedTuple):
    scale: jax.Array
    previous_loss: jax.Array
    previous_delta: jax.Array


def scale_by_loss_curvature(factor: float = 0.99) -> optax.GradientTransformationExtraArgs:
    """The author's rule on the loss's temporal derivative: scale x factor when the
    derivative L_t − L_{t−1} rose since the previous step, / factor otherwise. The first two
    steps (no derivative to compare yet) keep the scale. Needs `value=` in `update`."""

    def init(params: Params) -> LossCurvatureState:
        del params
        inf = jnp.full((), jnp.inf, jnp.float32)
        return LossCurvatureState(jnp.ones((), jnp.float32), inf, inf)

    def update(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        value = jnp.asarray(value, jnp.float32)
        delta = jnp.where(jnp.isinf(state.previous_loss), jnp.inf, value - state.previous_loss)
        known = jnp.isfinite(delta) & jnp.isfinite(state.previous_delta)
        rose = delta > state.previous_delta
        scale = jnp.where(
            known, jnp.where(rose, state.scale * factor, state.scale / factor), state.scale
        )
        updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
        return updates, LossCurvatureState(scale, value, delta)

    return optax.GradientTransformationExtraArgs(init, update)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformationExtraArgs:
    """Adam (+ optional decoupled weight decay) with the configured learning-rate rule."""
    parts: list[optax.GradientTransformation] = [optax.scale_by_adam()]
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.schedule in ("adaptive", "adaptive2"):
        rule = scale_by_loss_trend if cfg.schedule == "adaptive" else scale_by_loss_curvature
        parts.append(rule(cfg.adaptive_factor))
        parts.append(optax.scale(-cfg.learning_rate))
    elif cfg.schedule == "cosine":
        parts.append(
            optax.scale_by_learning_rate(
                optax.cosine_decay_schedule(cfg.learning_rate, total_steps)
            )
        )
    else:
        parts.append(optax.scale(-cfg.learning_rate))
    return optax.chain(*parts)


def learning_rate(opt_state: Any, cfg: TrainConfig) -> jax.Array:
    """The adaptive rule's current step size, cfg.learning_rate x its scale (per fold when
    the state is stacked); the configured rate for the other schedules."""
    for part in opt_state:
        if isinstance(part, LossTrendState | LossCurvatureState):
            return cfg.learning_rate * part.scale
    return jnp.asarray(cfg.learning_rate, jnp.float32)


def weighted_cross_entropy(
    logits: jax.Array, y: jax.Array, w: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over rows with weight w (padding rows have w = 0)."""
    n_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(y, n_classes), label_smoothing)
    ce = optax.softmax_cross_entropy(logits, targets)
    total = jnp.maximum(w.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
    return (ce * w).sum() / total, (correct * w).sum() / total


EPOCH_LOOPS = ("scan", "python")


class Trainer:
    """Builds the compiled programs for one (model, objective, config) and runs them.

    `train_chunk(state, data, n_epochs)` runs `n_epochs` epochs for all folds at once: the
    fold axis is `vmap`ped, epochs are a `lax.scan`. It is compiled once per chunk length.
    With `fold_axis=False` the state and data are one split's, with no leading fold axis
    (`data` a `FoldData` or the training `Split`), and `evaluate(state, split)` too: the
    form for a model of one's own (`gcnprune_jax.fit.prune`).
    """

    def __init__(
        self,
        apply_fn: Callable[..., jax.Array],
        cfg: TrainConfig,
        objective: Objective = DENSE,
        *,
        n_train: int,
        fold_axis: bool = True,
        epoch_loop: str = "scan",
    ) -> None:
        if epoch_loop not in EPOCH_LOOPS:
            raise ValueError(f"epoch_loop must be one of {EPOCH_LOOPS}, got {epoch_loop!r}")
        self.apply_fn = apply_fn
        self.fold_axis = fold_axis
        self.epoch_loop = epoch_loop
        self.cfg = cfg
        self.objective = objective
        self.n_train = n_train
        full_batch = cfg.batch_size == 0 or cfg.batch_size >= n_train
        self.batch_size = n_train if full_batch else cfg.batch_size
        self.steps_per_epoch = -(-n_train // self.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(cfg, self.total_steps)
        self._compiled_chunk = jax.jit(self._train_chunk, static_argnums=2)
        self._compiled_epoch = jax.jit(self._one_epoch)
        self.evaluate = jax.jit(jax.vmap(self._evaluate) if fold_axis else self._evaluate)
        self.trace_count = 0

    def train_chunk(
        self, state: TrainState, data: FoldData | Split, n_epochs: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """`n_epochs` epochs from `state`: (new state, per-epoch metrics, epochs on the last
        axis). epoch_loop "scan": one compiled program per chunk length; "python": one
        compiled epoch, called `n_epochs` times (XLA:CPU runs convolutions inside a loop body
        many times slower than outside one, jax-ml/jax#12868)."""
        if self.epoch_loop == "scan":
            return self._compiled_chunk(state, data, n_epochs)
        epochs = []
        for _ in range(n_epochs):
            state, metrics = self._compiled_epoch(state, data)
            epochs.append(metrics)
        return state, jax.tree.map(lambda *m: jnp.stack(m, axis=-1), *epochs)

    def init_state(self, latent: Params, aux: Any, key: jax.Array) -> TrainState:
        """One fold's initial state (vmap it, or stack single states, for several folds)."""
        opt_state = self.optimizer.init(self.trained(latent, aux))
        return TrainState(latent, opt_state, aux, jnp.zeros((), jnp.int32), key)

    def trained(self, latent: Params, aux: Any) -> Any:
        """What the optimizer updates: the latent params, or (latent, trainable method state)
        for objectives with `trainable_aux`."""
        return (latent, aux[1]) if self.objective.trainable_aux else latent

    def _split_trained(self, trained: Any, aux: Any) -> tuple[Params, Any]:
        if self.objective.trainable_aux:
            return trained[0], (aux[0], trained[1])
        return trained, aux

    def _context(self, step: jax.Array) -> Context:
        return Context(step=step, total_steps=jnp.asarray(self.total_steps, jnp.int32))

    def _loss(self, trained: Any, aux: Any, batch: Split, ctx: Context, dropout_key: jax.Array):
        latent, aux = self._split_trained(trained, aux)
        effective, penalty = self.objective.transform_and_penalty(latent, aux, ctx)
        ce, acc = self._cross_entropy(effective, batch, dropout_key, self.cfg.label_smoothing)
        return ce + penalty, (ce, penalty, acc)

    def _cross_entropy(
        self, effective: Params, batch: Split, dropout_key: jax.Array | None, smoothing: float
    ) -> tuple[jax.Array, jax.Array]:
        def one(params: Params) -> tuple[jax.Array, jax.Array]:
            logits = self.apply_fn(params, batch.x, dropout_key)
            return weighted_cross_entropy(logits, batch.y, batch.w, smoothing)

        if not self.objective.n_rates:
            return one(effective)
        ce, acc = jax.vmap(one)(effective)  # one network per rate, same batch and dropout
        return ce.mean(), acc.mean()

    def _step(self, state: TrainState, batch: Split) -> tuple[TrainState, dict[str, jax.Array]]:
        key, dropout_key = jax.random.split(state.key)
        ctx = self._context(state.step)
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        trained = self.trained(state.latent, state.aux)
        (loss, (ce, penalty, acc)), grads = grad_fn(trained, state.aux, batch, ctx, dropout_key)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, trained, value=loss)
        latent, aux = self._split_trained(optax.apply_updates(trained, updates), state.aux)
        new_state = TrainState(latent, opt_state, aux, state.step + 1, key)
        return new_state, {"loss": loss, "ce": ce, "penalty": penalty, "train_accuracy": acc}

    def _epoch(self, state: TrainState, train: Split) -> tuple[TrainState, dict[str, jax.Array]]:
        if self.steps_per_epoch == 1:
            return self._step(state, train)
        key, perm_key = jax.random.split(state.key)
        state = state._replace(key=key)
        n = train.y.shape[0]
        padded = self.steps_per_epoch * self.batch_size
        order = jax.random.permutation(perm_key, n)
        # Pad the permutation to whole batches with weight-0 rows.
        order = jnp.concatenate([order, jnp.zeros((padded - n,), order.dtype)])
        valid = jnp.concatenate([jnp.ones((n,)), jnp.zeros((padded - n,))])
        order = order.reshape(self.steps_per_epoch, self.batch_size)
        valid = valid.reshape(self.steps_per_epoch, self.batch_size)

        def body(s, idx_valid):
            idx, v = idx_valid
            batch = Split(train.x[idx], train.y[idx], train.w[idx] * v)
            return self._step(s, batch)

        state, metrics = jax.lax.scan(body, state, (order, valid))
        return state, jax.tree.map(jnp.mean, metrics)

    def _train_chunk(self, state: TrainState, data: FoldData, n_epochs: int):
        # Counted at trace time only: tests use it to check one compilation per configuration.
        self.trace_count += 1

        def epochs(s: TrainState, train: Split):
            return jax.lax.scan(lambda st, _: self._epoch(st, train), s, None, length=n_epochs)

        return self._per_fold(epochs, state, data)

    def _one_epoch(self, state: TrainState, data: FoldData | Split):
        """One epoch outside any loop (epoch_loop "python")."""
        self.trace_count += 1
        return self._per_fold(self._epoch, state, data)

    def _per_fold(self, fn: Callable[..., Any], state: TrainState, data: FoldData | Split):
        """fn(state, training split) for every fold (vmapped), or for the one split."""

        def one_fold(s: TrainState, d: FoldData | Split):
            return fn(s, d.train if isinstance(d, FoldData) else d)

        return jax.vmap(one_fold)(state, data) if self.fold_axis else one_fold(state, data)

    def _evaluate(self, state: TrainState, split: Split) -> dict[str, jax.Array]:
        effective = self.objective.transform(state.latent, state.aux, self._context(state.step))
        ce, acc = self._cross_entropy(effective, split, None, 0.0)
        return {"loss": ce, "accuracy": acc}


def stack_trees(trees: list[Any]) -> Any:
    """Stack pytrees of identical structure along a new leading (fold) axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def params_digest(latent: Params) -> str:
    """sha256 of the latent parameters' bytes, leaves in key-path order, paths included."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(latent)[0]:
        arr = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str(arr.dtype).encode() + str(arr.shape).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()
