"""Baselines of docs/methods.md#baselines: one-shot mask selection, then training with the mask held
fixed.

Magnitude (global or layerwise) and structured pruning select their masks from trained
weights ("train, prune, fine-tune"); random and SNIP select theirs at initialization and
train the sparse network from there. Every selection keeps exactly c = keep_count(N, r)
entries (docs/methods.md#pruning-rate), so all methods are compared at the same realized rate.

Selections are export-time functions on concrete arrays (numpy), deterministic: ties are
broken by the global index (paths sorted by name, then C-order), never by chance.

During training the mask is the method state (`aux`) of the `fixed` method: ψ = aux, no
penalty. The dense phase before a magnitude or structured pruning runs the same program
with all-ones masks (Ŵ · 1 = Ŵ exactly), so a run keeps one state structure throughout and
checkpoints before and after the pruning step restore alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.api import (
    MaskContext,
    Masks,
    Params,
    PruningMethod,
    Select,
    prunable_leaves,
)
from gcnprune_jax.pruning.shared import ExportResult, as_gio, keep_count, split_flat

BoolMasks = dict[str, np.ndarray]
SCOPES = ("global", "layerwise")
STRUCTURES = ("column", "row", "channel")


def fixed(select: Select | None = None) -> PruningMethod:
    """ψ = aux: the mask is carried as method state and held fixed (fine-tuning, sparse
    training from a mask chosen at init). aux = {path: float mask of Ŵ_ℓ's shape}."""

    def init(latent: Params, key: jax.Array) -> Masks:
        del key
        return {name: jnp.ones_like(w) for name, w in prunable_leaves(latent, select).items()}

    def mask(latent: Params, aux: Masks, ctx: MaskContext) -> Masks:
        del latent, ctx
        return dict(aux)

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks) -> jax.Array:
        del latent, aux, ctx, masks
        return jnp.zeros((), jnp.float32)

    return PruningMethod("fixed", init, mask, penalty, select=select)


def _top_k(scores: Mapping[str, np.ndarray], kept: int) -> BoolMasks:
    """Keep the `kept` largest scores over all tensors together; ties by global index."""
    names = sorted(scores)
    flat = np.concatenate([np.asarray(scores[n], np.float64).ravel() for n in names])
    if not np.all(np.isfinite(flat)):
        raise ValueError("pruning scores must be finite")
    order = np.lexsort((np.arange(flat.size), -flat))
    keep = np.zeros(flat.size, bool)
    keep[order[:kept]] = True
    return _split(keep, scores, names)


def _split(keep: np.ndarray, like: Mapping[str, np.ndarray], names: list[str]) -> BoolMasks:
    return split_flat(keep, {name: np.shape(like[name]) for name in names})


def _total(latents: Mapping[str, ArrayLike]) -> int:
    return int(sum(np.size(w) for w in latents.values()))


def magnitude_masks(
    latents: Mapping[str, ArrayLike], rate: float, scope: str = "global"
) -> BoolMasks:
    """Unstructured magnitude pruning: keep the largest |Ŵ|.

    scope "global": the top c = keep_count(N, r) entries over all tensors together.
    scope "layerwise": each tensor keeps the same fraction; per-tensor counts (1 − r) N_ℓ are
    rounded by largest remainder so that they still sum to exactly c.
    """
    if scope not in SCOPES:
        raise ConfigError(f"magnitude scope must be one of {SCOPES}, got {scope!r}")
    mags = {n: np.abs(np.asarray(w, np.float64)) for n, w in latents.items()}
    kept = keep_count(_total(latents), rate)
    if scope == "global":
        return _top_k(mags, kept)
    names = sorted(mags)
    sizes = np.array([mags[n].size for n in names])
    quota = sizes * (kept / sizes.sum())
    counts = np.floor(quota).astype(int)
    remainder_order = np.lexsort((np.arange(len(names)), -(quota - counts)))
    counts[remainder_order[: kept - counts.sum()]] += 1
    return {n: _top_k({n: mags[n]}, int(c))[n] for n, c in zip(names, counts, strict=True)}


def _group_scores(w: np.ndarray, structure: str) -> np.ndarray:
    """RMS of each group (docs/methods.md#group-statistics) in the (G, I, O) view, broadcast
    back."""
    w_gio = np.asarray(as_gio(jnp.asarray(w)), np.float64)
    axes = {"row": (2,), "column": (1,), "channel": (1, 2)}[structure]
    rms = np.sqrt(np.mean(np.square(w_gio), axis=axes, keepdims=True))
    return np.broadcast_to(rms, w_gio.shape)


def structured_masks(
    latents: Mapping[str, ArrayLike], rate: float, structure: str = "column"
) -> BoolMasks:
    """Structured magnitude pruning: rank whole groups (rows, columns or channels of the
    (G, I, O) view) by their RMS, over all tensors together, and keep the best groups.

    To keep exactly c entries, whole groups are taken in rank order while they fit; the
    first group that does not fit is kept partially (its largest |Ŵ| entries), so at most one
    group in the network is not pure. Ties by global index.
    """
    if structure not in STRUCTURES:
        raise ConfigError(f"structured pruning structure must be one of {STRUCTURES}")
    names = sorted(latents)
    kept = keep_count(_total(latents), rate)
    group_ids, scores, magnitudes = [], [], []
    offset = 0
    for name in names:
        w = np.asarray(latents[name], np.float64)
        w_gio = np.asarray(as_gio(jnp.asarray(w)), np.float64)
        g, i, o = w_gio.shape
        ids = {
            "row": np.arange(g * i).reshape(g, i, 1),
            "column": np.arange(g * o).reshape(g, 1, o),
            "channel": np.arange(g).reshape(g, 1, 1),
        }[structure]
        group_ids.append((np.broadcast_to(ids, w_gio.shape) + offset).ravel())
        offset += int(ids.max()) + 1
        scores.append(_group_scores(w, structure).ravel())
        magnitudes.append(np.abs(w_gio).ravel())
    gid = np.concatenate(group_ids)
    score = np.concatenate(scores)
    magnitude = np.concatenate(magnitudes)
    n_groups = offset
    group_score = np.zeros(n_groups)
    group_score[gid] = score
    group_size = np.bincount(gid, minlength=n_groups)
    rank = np.lexsort((np.arange(n_groups), -group_score))
    cumulative = np.cumsum(group_size[rank])
    n_whole = int(np.searchsorted(cumulative, kept, side="right"))
    keep_group = np.zeros(n_groups, bool)
    keep_group[rank[:n_whole]] = True
    keep = keep_group[gid]
    missing = kept - int(keep.sum())
    if missing > 0:
        partial = np.flatnonzero(gid == rank[n_whole])
        best = partial[np.lexsort((partial, -magnitude[partial]))[:missing]]
        keep[best] = True
    return _split(keep, {n: np.asarray(latents[n]) for n in names}, names)


def random_masks(latents: Mapping[str, ArrayLike], rate: float, key: jax.Array) -> BoolMasks:
    """Keep c entries chosen uniformly at random over the whole network (seeded by `key`)."""
    names = sorted(latents)
    total = _total(latents)
    scores = np.asarray(jax.random.uniform(key, (total,)), np.float64)
    keep = np.zeros(total, bool)
    keep[np.lexsort((np.arange(total), -scores))[: keep_count(total, rate)]] = True
    return _split(keep, {n: np.asarray(latents[n]) for n in names}, names)


def snip_masks(
    latents: Mapping[str, ArrayLike], grads: Mapping[str, ArrayLike], rate: float
) -> BoolMasks:
    """SNIP (Lee et al. 2019): keep the c entries with the largest saliency |Ŵ · ∂L/∂Ŵ|,
    gradients of the training loss taken at initialization."""
    if set(grads) != set(latents):
        raise ValueError("snip needs a gradient for every prunable tensor")
    saliency = {
        n: np.abs(np.asarray(latents[n], np.float64) * np.asarray(grads[n])) for n in latents
    }
    return _top_k(saliency, keep_count(_total(latents), rate))


class Baseline(NamedTuple):
    """A baseline of docs/methods.md#baselines.

    name: the method name. at_init: select the mask at initialization (and train sparse for
    all epochs) rather than after a dense training phase. needs_grads: `select` takes the
    training-loss gradients at the selection point.
    select(latents, rate, *, key, grads, options) -> {path: bool mask}.
    """

    name: str
    at_init: bool
    needs_grads: bool
    select: Callable[..., BoolMasks]


def _select_magnitude(latents, rate, *, key, grads, options):
    del key, grads
    return magnitude_masks(latents, rate, options.scope)


def _select_structured(latents, rate, *, key, grads, options):
    del key, grads
    return structured_masks(latents, rate, options.structure)


def _select_random(latents, rate, *, key, grads, options):
    del grads, options
    return random_masks(latents, rate, key)


def _select_snip(latents, rate, *, key, grads, options):
    del key, options
    return snip_masks(latents, grads, rate)


BASELINES: dict[str, Baseline] = {
    "magnitude": Baseline("magnitude", False, False, _select_magnitude),
    "structured": Baseline("structured", False, False, _select_structured),
    "random": Baseline("random", True, False, _select_random),
    "snip": Baseline("snip", True, True, _select_snip),
}


def _selection_export(select: Callable[..., BoolMasks]) -> Callable[..., ExportResult]:
    """An `export` that keeps the selection's crisp masks (from the latents, at the rate)."""

    def export(
        soft_masks: Mapping[str, ArrayLike], latents: Mapping[str, ArrayLike], target_rate: float
    ) -> ExportResult:
        masks = select(latents, float(target_rate))
        total = _total(latents)
        kept = int(sum(int(np.sum(m)) for m in masks.values()))
        soft_kept = float(sum(np.sum(np.asarray(m, np.float64)) for m in soft_masks.values()))
        changed = sum(int(np.sum(masks[n] != (np.asarray(soft_masks[n]) > 0.5))) for n in masks)
        return ExportResult(masks, kept, total, 1.0 - kept / total, 1.0 - soft_kept / total,
                            changed)  # fmt: skip

    return export


def _refuse_snip(soft_masks: Any, latents: Any, target_rate: float) -> ExportResult:
    del soft_masks, latents, target_rate
    raise ConfigError(
        "snip selects its mask from the training loss's gradients at initialization, which an "
        "export does not see: call baselines.snip_masks(latents, grads, rate) with your "
        "gradients, or train it with `gcnprune prune --method snip`"
    )


def baseline_method(
    name: str,
    *,
    scope: str = "global",
    structure: str = "column",
    seed: int = 0,
    select: Select | None = None,
) -> PruningMethod:
    """A baseline (or "dense") as a registry value with the common interface (`api.get`).

    During training ψ = aux, all ones from `init` (the network trains dense); `export`
    selects the baseline's crisp masks from the latents at the target rate (magnitude: the
    largest |Ŵ|, `scope`; structured: whole `structure` groups; random: seeded by `seed`).
    `gcnprune prune` then fine-tunes with the mask fixed (`schedule`); a library user
    calls `export` wherever the schedule says. dense keeps everything.
    """
    if scope not in SCOPES:
        raise ConfigError(f"magnitude scope must be one of {SCOPES}, got {scope!r}")
    if structure not in STRUCTURES:
        raise ConfigError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    method = fixed(select)
    selections = {
        "dense": lambda latents, rate: {n: np.ones(np.shape(w), bool) for n, w in latents.items()},
        "magnitude": lambda latents, rate: magnitude_masks(latents, rate, scope),
        "structured": lambda latents, rate: structured_masks(latents, rate, structure),
        "random": lambda latents, rate: random_masks(latents, rate, jax.random.PRNGKey(seed)),
    }
    schedule = {
        "dense": "dense",
        "magnitude": "prune_then_finetune",
        "structured": "prune_then_finetune",
        "random": "sparse_from_init",
        "snip": "sparse_from_init",
    }[name]
    export = _refuse_snip if name == "snip" else _selection_export(selections[name])
    return method._replace(name=name, export=export, schedule=schedule)


for _name in ("dense", *BASELINES):
    api.register(_name, functools.partial(baseline_method, _name))
