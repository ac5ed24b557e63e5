"""The one interface every pruning method implements (docs/methods.md#shared-notation), in the optax
style.

A method is a small value of pure functions (`PruningMethod`):

    aux   = method.init(latent, key)               # e.g. per-tensor thresholds a_ℓ at init
    masks = method.mask(latent, aux, ctx)           # {path: ψ_ℓ, the shape of Ŵ_ℓ}, in [0, 1]
    loss  = method.penalty(latent, aux, ctx, masks) # scalar: budget, rank, alignment terms

The network runs on W = Ŵ ⊙ ψ(Ŵ) (docs/methods.md#latent-parametrization):
`apply_masks` builds it, `to_objective` plugs a method into the shared train step
(`train.Objective`), `compose` makes one method out of several (Hadamard product of masks, sum of
penalties), and the registry (`register`, `get`, `names`) lets configs name methods by string.

Masks are dicts over the prunable leaves only (`models.gcn.is_prunable`), keyed by
`models.gcn.path_name` of their key path; every other parameter passes through unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import is_prunable, path_name
from gcnprune_jax.train import Context, Objective

Params = dict[str, Any]
Masks = dict[str, jax.Array]

# Modules that register the built-in methods when imported; `get` and `names` import them
# lazily, since they import this module themselves.
_BUILTIN_MODULES = (
    "gcnprune_jax.pruning.baselines",
    "gcnprune_jax.pruning.ctf",
    "gcnprune_jax.pruning.pmp",
    "gcnprune_jax.pruning.ssp",
    "gcnprune_jax.pruning.tcmp",
)


SCHEDULES = ("soft", "dense", "prune_then_finetune", "sparse_from_init")


class MaskContext(NamedTuple):
    """What a mask may depend on besides the latent parameters
    (docs/methods.md#thresholds-and-temperature): the step and the training length (for annealed
    temperatures) and the target pruning rate r. All scalars,
    possibly traced (e.g. r vmapped over rates)."""

    step: jax.Array
    total_steps: jax.Array
    target_rate: jax.Array

    @classmethod
    def from_train(cls, ctx: Context, target_rate: ArrayLike) -> MaskContext:
        """The train step's `Context` plus a target rate r."""
        return cls(
            step=jnp.asarray(ctx.step),
            total_steps=jnp.asarray(ctx.total_steps),
            target_rate=jnp.asarray(target_rate, jnp.float32),
        )


class PruningMethod(NamedTuple):
    """A pruning method as pure functions (see the module docstring for the call pattern).

    name: the registry name (or "a+b" for a composition).
    init(latent, key) -> aux: a pytree computed once from the latent params at init.
    mask(latent, aux, ctx) -> masks: {path: soft mask ψ_ℓ of Ŵ_ℓ's shape} over the
      prunable leaves only, values in [0, 1].
    penalty(latent, aux, ctx, masks) -> scalar added to the cross-entropy; `masks` are the
      masks actually applied to the network.
    export(soft_masks, latents, target_rate) -> shared.ExportResult, optional: the method's
      own exact export (numpy, after training), for methods whose crisp masks must keep a
      structure (e.g. TCMP: no dangling connections); default `shared.exact_export`.
    prepare(latent, key) -> latent, optional: replaces the initial latent parameters before
      training starts (e.g. PMP draws its weights from its prior).
    trainable_aux: when True, `init` returns aux = (frozen, trainable) and the train step
      optimizes `trainable` with the latent parameters (SSP's gate logits); an `export`
      of such a method also receives the fold's aux as `aux=`.
    schedule: how `gcnprune prune` trains it (`SCHEDULES`): "soft" (the learned methods: soft
      masks, then the exact export), "dense" (no pruning), "prune_then_finetune" (train dense,
      `export` selects the crisp mask, fine-tune with it fixed: magnitude, structured),
      "sparse_from_init" (the mask is chosen at initialization: random, SNIP).
    select: which leaves the method prunes (`prunable_leaves`); None = `is_prunable`.
    """

    name: str
    init: Callable[[Params, jax.Array], Any]
    mask: Callable[[Params, Any, MaskContext], Masks]
    penalty: Callable[[Params, Any, MaskContext, Masks], jax.Array]
    export: Callable[..., Any] | None = None
    prepare: Callable[[Params, jax.Array], Params] | None = None
    trainable_aux: bool = False
    schedule: str = "soft"
    select: Callable[[tuple[Any, ...], Any], bool] | None = None


Select = Callable[[tuple[Any, ...], Any], bool]


def prunable_leaves(params: Params, select: Select | None = None) -> dict[str, jax.Array]:
    """{path: Ŵ_ℓ} of the prunable leaves, in the pytree's order.

    select(key_path, leaf) -> bool chooses them; default `models.gcn.is_prunable` (key paths
    ending in `kernel`, `query`, `key`, `conv`). For another model, e.g.
    `select=lambda path, leaf: leaf.ndim >= 2`. `params` may be any pytree of arrays,
    including a Flax NNX `State` and lists of modules.
    """
    select = is_prunable if select is None else select
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    chosen = {path_name(path): leaf for path, leaf in flat if select(path, leaf)}
    flat_leaves = [name for name, leaf in chosen.items() if jnp.ndim(leaf) < 2]
    if flat_leaves:
        raise ConfigError(
            "select() chose leaves a method cannot prune (it needs a kernel of 2 or more "
            f"dimensions, viewed as (G, I, O)): {', '.join(flat_leaves[:8])} with shapes "
            + ", ".join(str(jnp.shape(chosen[n])) for n in flat_leaves[:8])
            + "; exclude them, e.g. select=lambda path, leaf: leaf.ndim >= 2"
        )
    return chosen


def _flat(params: Any) -> list[tuple[Any, Any]]:
    return jax.tree_util.tree_flatten_with_path(params)[0]


def apply_masks(
    params: Params, masks: Mapping[str, ArrayLike], select: Select | None = None
) -> Params:
    """Effective parameters W = Ŵ ⊙ ψ (docs/methods.md#prunable-tensors) for the prunable leaves;
    others unchanged.

    params: the latent pytree. masks: {path: ψ_ℓ} with exactly the prunable leaves' paths,
    each of its leaf's shape (explicit masks: a leaf left unpruned gets all ones, never None).
    select: which leaves are prunable, as in `prunable_leaves` (a method's `select`).
    Returns a pytree of params' structure.
    """
    chosen = is_prunable if select is None else select
    expected = prunable_leaves(params, chosen)
    if not expected:
        rule = (
            "a weight tensor whose key path ends in 'kernel', 'query', 'key' or 'conv' "
            "(models.gcn.is_prunable; pass select= for other names)"
            if select is None
            else "one for which the method's select() is true"
        )
        raise ConfigError(
            f"no prunable parameters in this pytree: a prunable leaf is {rule}; got the paths "
            + ", ".join(path_name(p) for p, _ in _flat(params)[:8])
        )
    if set(masks) != set(expected):
        raise ValueError(
            f"masks must name exactly the prunable parameters {sorted(expected)}, "
            f"got {sorted(masks)}"
        )
    for name, leaf in expected.items():
        if jnp.shape(masks[name]) != jnp.shape(leaf):
            raise ValueError(
                f"mask of {name!r} has shape {jnp.shape(masks[name])}, "
                f"the parameter {jnp.shape(leaf)}"
            )

    def effective(path: tuple[Any, ...], leaf: Any) -> Any:
        return leaf * masks[path_name(path)] if chosen(path, leaf) else leaf

    return jax.tree_util.tree_map_with_path(effective, params)


def soft_rate(masks: Mapping[str, ArrayLike], n_total: ArrayLike) -> jax.Array:
    """Soft pruning rate 1 − Σ_ℓ Σ ψ_ℓ / N (docs/methods.md#pruning-rate, with soft masks).

    masks: {path: ψ_ℓ}; n_total: N, the number of prunable entries. Returns a scalar.
    """
    kept = sum(jnp.sum(m) for m in masks.values())
    return 1.0 - kept / jnp.asarray(n_total, jnp.float32)


def compose(*methods: PruningMethod) -> PruningMethod:
    """One method out of several: ψ = Π_k ψ_k (Hadamard product, path by path), penalty
    Σ_k penalty_k, aux = (aux_1, …, aux_K) with one key per part (split from the given key).

    Each part's penalty receives the combined masks, the ones the network actually runs on
    (so a budget term counts what is really kept). When some part has trainable state, the
    composition does too: aux = ((frozen_1, …), (trainable_1, …)), with () standing for the
    trainable state of the parts that have none.
    """
    if not methods:
        raise ConfigError("compose needs at least one pruning method")
    one_shot = [m.name for m in methods if m.schedule != "soft"]
    if one_shot:
        raise ConfigError(
            f"compose: {', '.join(one_shot)} select their masks once (schedule "
            "prune_then_finetune, sparse_from_init or dense) and cannot be composed with "
            "soft-mask methods"
        )
    trainable = any(m.trainable_aux for m in methods)
    if len({id(m.select) for m in methods}) > 1:
        raise ConfigError(
            "compose: the methods select different prunable leaves (select=); pass them the "
            "same select function"
        )

    def parts_of(aux: Any) -> list[Any]:
        if not trainable:
            return list(aux)
        frozen, learned = aux
        return [
            (f, t) if m.trainable_aux else f
            for m, f, t in zip(methods, frozen, learned, strict=True)
        ]

    def init(latent: Params, key: jax.Array) -> Any:
        keys = jax.random.split(key, len(methods))
        parts = tuple(m.init(latent, k) for m, k in zip(methods, keys, strict=True))
        if not trainable:
            return parts
        frozen = tuple(p[0] if m.trainable_aux else p for m, p in zip(methods, parts, strict=True))
        learned = tuple(
            p[1] if m.trainable_aux else () for m, p in zip(methods, parts, strict=True)
        )
        return frozen, learned

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        parts = [m.mask(latent, a, ctx) for m, a in zip(methods, parts_of(aux), strict=True)]
        combined = dict(parts[0])
        for part in parts[1:]:
            if set(part) != set(combined):
                raise ValueError("composed methods must mask the same parameters")
            combined = {name: combined[name] * part[name] for name in combined}
        return combined

    def composed_export() -> Callable[..., Any] | None:
        """The one part's own export, applied to the combined soft masks (and given that
        part's trained state when it has one); None when no part has an export."""
        exporting = [k for k, m in enumerate(methods) if m.export is not None]
        if len(exporting) > 1:
            raise ConfigError(
                "compose: "
                + ", ".join(methods[k].name for k in exporting)
                + " each have their own export and there is no single way to combine them; "
                "compose at most one method with its own export"
            )
        if not exporting:
            return None
        k = exporting[0]
        part = methods[k]
        if not part.trainable_aux:
            return part.export

        def export(soft_masks: Any, latents: Any, target_rate: float, aux: Any = None) -> Any:
            part_aux = None if aux is None else parts_of(aux)[k]
            return part.export(soft_masks, latents, target_rate, aux=part_aux)

        return export

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks):
        terms = [
            m.penalty(latent, a, ctx, masks) for m, a in zip(methods, parts_of(aux), strict=True)
        ]
        return sum(terms[1:], terms[0])

    return PruningMethod(
        "+".join(m.name for m in methods),
        init,
        mask,
        penalty,
        export=composed_export(),
        prepare=_composed_prepare(methods),
        trainable_aux=trainable,
        select=methods[0].select,
    )


def _composed_prepare(methods: tuple[PruningMethod, ...]) -> Callable[..., Any] | None:
    """Every part's `prepare` in order, each with its own key split from the given one."""
    preparing = [m.prepare for m in methods if m.prepare is not None]
    if not preparing:
        return None

    def prepare(latent: Params, key: jax.Array) -> Params:
        for fn, k in zip(preparing, jax.random.split(key, len(preparing)), strict=True):
            latent = fn(latent, k)
        return latent

    return prepare


def to_objective(method: PruningMethod, target_rate: ArrayLike) -> Objective:
    """Plug a method into the shared train step (`train.Objective`) at target rate r.

    transform(latent, aux, ctx) = apply_masks(latent, method.mask(latent, aux, ctx_r));
    penalty(latent, aux, ctx) = method.penalty(latent, aux, ctx_r, masks), ctx_r the train
    context plus r. The train state's `aux` must be `method.init(latent, key)`. The train
    step calls `both`, which computes the masks once for the network and the penalty.
    """

    def masks_of(latent: Params, aux: Any, ctx: Context) -> tuple[MaskContext, Masks]:
        mask_ctx = MaskContext.from_train(ctx, target_rate)
        return mask_ctx, method.mask(latent, aux, mask_ctx)

    def transform(latent: Params, aux: Any, ctx: Context) -> Params:
        return apply_masks(latent, masks_of(latent, aux, ctx)[1], method.select)

    def penalty(latent: Params, aux: Any, ctx: Context) -> jax.Array:
        mask_ctx, masks = masks_of(latent, aux, ctx)
        return method.penalty(latent, aux, mask_ctx, masks)

    def both(latent: Params, aux: Any, ctx: Context) -> tuple[Params, jax.Array]:
        mask_ctx, masks = masks_of(latent, aux, ctx)
        return apply_masks(latent, masks, method.select), method.penalty(
            latent, aux, mask_ctx, masks
        )

    return Objective(
        transform=transform, penalty=penalty, both=both, trainable_aux=method.trainable_aux
    )


def to_multi_rate_objective(method: PruningMethod, rates: ArrayLike) -> Objective:
    """One-shot multi-rate training (docs/methods.md#mrmp): the shared latent pytree runs as R
    networks, one per rate r in `rates`, each masked by `method.mask` at r (rates vmapped, not a
    Python loop); the train step averages their cross-entropies. The penalty is the method's at the
    first rate (PMP's alignment term does not depend on r).

    transform returns the R effective pytrees stacked on a leading axis (`n_rates` = R).
    """
    rates = jnp.asarray(rates, jnp.float32)
    if rates.ndim != 1 or rates.shape[0] < 1:
        raise ConfigError(f"multi-rate training needs a non-empty vector of rates, got {rates}")

    def stacked(latent: Params, aux: Any, ctx: Context) -> tuple[Masks, MaskContext]:
        mask_ctx = MaskContext.from_train(ctx, rates[0])
        masks = jax.vmap(lambda r: method.mask(latent, aux, mask_ctx._replace(target_rate=r)))(
            rates
        )
        return masks, mask_ctx

    def transform(latent: Params, aux: Any, ctx: Context) -> Params:
        masks = stacked(latent, aux, ctx)[0]
        return jax.vmap(lambda m: apply_masks(latent, m, method.select))(masks)

    def both(latent: Params, aux: Any, ctx: Context) -> tuple[Params, jax.Array]:
        masks, mask_ctx = stacked(latent, aux, ctx)
        effective = jax.vmap(lambda m: apply_masks(latent, m, method.select))(masks)
        first = {name: m[0] for name, m in masks.items()}
        return effective, method.penalty(latent, aux, mask_ctx, first)

    def penalty(latent: Params, aux: Any, ctx: Context) -> jax.Array:
        return both(latent, aux, ctx)[1]

    return Objective(
        transform=transform,
        penalty=penalty,
        both=both,
        n_rates=rates.shape[0],
        trainable_aux=method.trainable_aux,
    )


_REGISTRY: dict[str, Callable[..., PruningMethod]] = {}


def register(name: str, factory: Callable[..., PruningMethod]) -> None:
    """Make `get(name, **hyper)` call `factory(**hyper)`. A name is registered once."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"pruning method {name!r} is already registered")
    _REGISTRY[name] = factory


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def names() -> tuple[str, ...]:
    """The registered method names (the learned methods, the baselines and "dense"), sorted."""
    _load_builtins()
    return tuple(sorted(_REGISTRY))


def get(name: str, **hyper: Any) -> PruningMethod:
    """The method registered as `name`, built with hyper-parameters `hyper`.

    Raises ConfigError for an unknown name (listing the known ones) or a hyper-parameter the
    method does not take.
    """
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown pruning method {name!r}; known methods: {names()}")
    try:
        return _REGISTRY[name](**hyper)
    except TypeError as err:
        raise ConfigError(f"bad hyper-parameters for pruning method {name!r}: {err}") from err
