"""TCMP: topologically consistent magnitude pruning (docs/methods.md#tcmp).

Magnitude mask M_ℓ = b_{a_ℓ, κ_t a_ℓ}(Ŵ_ℓ), entry-wise (thresholds and annealed relative
temperature as in CTF, docs/methods.md#shared-notation). The network runs on the consistent mask
M̃ = `topology.gcn_consistent`(M, h): M ⊙ (source accessibility) ⊙ (target co-accessibility),
computed by the forward and backward supervisory networks with the soft saturation
h(x) = 1 − exp(−x / τ_h). Loss: CE(Ŵ ⊙ M̃) + L_budget(Σ M̃), so no budget is spent on dangling
connections. The export (`consistent_export`) returns crisp masks with zero dangling
connections and, whenever possible, exactly c = keep_count(N, r) kept entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gcnprune_jax import chain as chain_lib
from gcnprune_jax.chain import Chain
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import GCNConfig, gcn_chain
from gcnprune_jax.pruning.api import (
    MaskContext,
    Masks,
    Params,
    PruningMethod,
    Select,
    prunable_leaves,
    register,
)
from gcnprune_jax.pruning.shared import (
    ExportResult,
    band_stop,
    budget_penalty,
    check_budget_options,
    held_anneal,
    keep_count,
    threshold_state,
    thresholds_of,
)
from gcnprune_jax.topology import (
    check_gcn_masks,
    gcn_consistent,
    hard_saturation,
    soft_saturation,
)

# Pair search of the export: how many first entries (in ψ order) to try before giving up.
_MAX_PAIR_TRIALS = 64


def tcmp(
    model: GCNConfig | Chain,
    n_nodes: int | None = None,
    alpha: float = 0.5,
    kappa_start: float = 0.5,
    kappa_end: float = 0.005,
    lam: float = 3e3,
    warmup: float = 0.5,
    hold: bool = True,
    tau_h: float = 0.1,
    zero_floor: bool = True,
    control: bool = True,
    control_speed: float = 10.0,
    select: Select | None = None,
) -> PruningMethod:
    """The TCMP method of docs/methods.md#tcmp for a network whose feature path is declared.

    model: the network's structure, which defines accessibility: a `chain.Chain` (any model,
      docs/api.md "Your own model's chain"), or the project's `GCNConfig` with `n_nodes`, the
      graph's node count (its chain is `models.gcn.gcn_chain`).
    alpha: threshold scale, a_ℓ = α · rms(Ŵ_ℓ at init) (docs/methods.md#thresholds-and-temperature).
    kappa_start, kappa_end: κ_0 and κ_min of the annealed relative temperature τ = κ_t a_ℓ.
      κ_0 = 0.5 (the reconstructed papers'), wider than CTF's 0.2: an entry-wise band-stop passes
      the budget's gradient only to weights within a few τ of the threshold (see
      `config.method_defaults`, which also sets λ).
    lam: λ of the budget loss (docs/methods.md#budget-loss), applied to Σ M̃.
    warmup: the budget's target rate ramps from 0 to r over this fraction of the steps
      (`shared.ramp_rate`; 0 = the reconstructed papers' constant target).
    hold: keep κ at kappa_start during the warmup, then anneal (as CTF).
    tau_h: τ_h of the soft saturation h(x) = 1 − exp(−x / τ_h) of the supervisory networks.
    zero_floor: rescale the band-stop so it is exactly 0 at Ŵ = 0 at every temperature
      (`shared.band_stop`); without it the budget is out of reach while κ is high.
    control, control_speed: the budget controller, as in CTF (`pruning.ctf.ctf`).
    select: which leaves are pruned (`api.prunable_leaves`); they must be exactly the chain's
      tensors. None: the chain's tensors (`Chain.select`), or the GCN's rule for a GCNConfig.

    aux = {path: a_ℓ (scalar)}; masks = {path: M̃_ℓ of Ŵ_ℓ's shape}; export =
    `consistent_export` for this model (zero dangling connections).
    """
    if isinstance(model, Chain):
        if n_nodes is not None:
            raise ConfigError("tcmp.n_nodes is part of the chain; pass only model=Chain(...)")
    elif isinstance(model, GCNConfig):
        if not (isinstance(n_nodes, int) and n_nodes >= 1):
            raise ConfigError(f"tcmp.n_nodes must be a positive int, got {n_nodes!r}")
    else:
        raise ConfigError(
            f"tcmp.model must be a chain.Chain or a GCNConfig, got {type(model).__name__}"
        )
    if select is None and isinstance(model, Chain):
        select = model.select()
    check_budget_options("tcmp", alpha, kappa_start, kappa_end, lam, warmup)
    if not tau_h > 0:
        raise ConfigError(f"tcmp.tau_h must be > 0, got {tau_h}")
    saturation = soft_saturation(tau_h)

    def init(latent: Params, key: jax.Array) -> Any:
        # Deterministic: thresholds come from the initial weights
        # (docs/methods.md#thresholds-and-temperature).
        del key
        return threshold_state(prunable_leaves(latent, select), alpha, control)

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        aux, factor = thresholds_of(aux, control, control_speed)
        kappa = held_anneal(
            ctx.step, ctx.total_steps, kappa_start, kappa_end, warmup if hold else 0.0
        )
        # docs/methods.md#tcmp: entry-wise magnitude mask, then only accessible and co-accessible
        # entries.
        magnitude = {
            name: band_stop(w, aux[name] * factor, kappa * aux[name] * factor, zero_floor)
            for name, w in prunable_leaves(latent, select).items()
        }
        if isinstance(model, Chain):
            return chain_lib.consistent(model, magnitude, h=saturation)
        return gcn_consistent(magnitude, model, n_nodes=n_nodes, h=saturation)

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks) -> jax.Array:
        del latent
        # Σ M̃: consistent connections only
        return budget_penalty(masks, ctx, warmup, lam, aux[1]["shift"] if control else None)

    def export(
        soft_masks: Mapping[str, ArrayLike],
        latents: Mapping[str, ArrayLike],
        target_rate: float,
        aux: Any = None,
    ) -> ExportResult:
        del aux  # the soft masks already carry the controller's threshold
        if isinstance(model, Chain):
            return consistent_export(soft_masks, latents, target_rate, chain=model)
        return consistent_export(soft_masks, latents, target_rate, cfg=model, n_nodes=n_nodes)

    return PruningMethod("tcmp", init, mask, penalty, export, trainable_aux=control, select=select)


class _Network:
    """The prunable entries of one chain as one flat boolean vector (paths sorted by name, then
    C order, as `shared.exact_export`), with the topology queries the export needs."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], net: Chain):
        self.names = sorted(shapes)
        self.shapes = {name: tuple(shapes[name]) for name in self.names}
        sizes = [int(np.prod(self.shapes[name])) for name in self.names]
        self.offsets = dict(zip(self.names, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
        self.total = int(sum(sizes))
        self.chain = net

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: flat[start : start + int(np.prod(shape))].reshape(shape)
            for (name, shape), start in zip(self.shapes.items(), self.offsets.values(), strict=True)
        }

    def join(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(parts[name]).ravel() for name in self.names])

    def live(self, keep: np.ndarray) -> np.ndarray:
        """The kept entries on some input→output path (`chain.live`), flat."""
        return self.join(chain_lib.live(self.chain, self.split(keep)))

    def frontier(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(attachable, forward), flat booleans over all entries, from the hard unit states of
        the kept set (`chain.unit_states` with h = min(1, x)).

        attachable: entries that are live once added to `keep` (by monotonicity of liveness):
          source unit accessible and target unit co-accessible; for a gate's query/key[g, i, j]:
          input i accessible, group g live and the other projection of dim j already on.
        forward: entries whose source side is reachable (input accessible; for query/key also
          the group live): the first half of a two-entry extension.
        """
        masks = {name: jnp.asarray(m, jnp.float32) for name, m in self.split(keep).items()}
        states = jax.tree.map(
            lambda s: np.asarray(s) > 0.5,
            chain_lib.unit_states(self.chain, masks, h=hard_saturation),
        )
        attach, forward = {}, {}
        for link in self.chain.links:
            p = link.prefix
            acc_in = states[f"{p}/acc_in"][None, None, :, None]
            co_out = states[f"{p}/co_out"]
            co_out = (co_out[None] if co_out.ndim == 1 else co_out)[:, None, None, :]
            canon = link._sizes
            forward[link.path] = chain_lib._uncanon(np.broadcast_to(acc_in, canon), link)
            attach[link.path] = chain_lib._uncanon(np.broadcast_to(acc_in & co_out, canon), link)
            if link.gate is None:
                continue
            head = states[f"{p}/group_live"][:, None, None, None]
            gate = link.gate
            for name, other in ((gate.query, "key_on"), (gate.key, "query_on")):
                on = states[f"{p}/{other}"][:, None, None, :]
                forward[name] = chain_lib._uncanon(
                    np.broadcast_to(acc_in & head, gate._sizes), gate
                )
                attach[name] = chain_lib._uncanon(
                    np.broadcast_to(acc_in & head & on, gate._sizes), gate
                )
        return self.join(attach), self.join(forward)

    def path(self, live: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """One input→output path (one entry per link) inside the non-empty live set `live`,
        choosing link by link from the last backwards the live entry of best rank into the
        unit already chosen. Flat boolean."""
        parts, ranks = self.split(live), self.split(rank)
        chosen = {name: np.zeros(shape, bool) for name, shape in self.shapes.items()}

        unit = None  # the output unit (g·O + o) the current link must feed
        for link in reversed(self.chain.links):
            canon_live = chain_lib._canon(parts[link.path], link)  # (G, T, I, O)
            canon_rank = chain_lib._canon(ranks[link.path], link)
            if unit is None:
                candidates, order = canon_live, canon_rank
            else:
                g, o = divmod(unit, link._sizes[3])
                candidates = np.zeros_like(canon_live)
                candidates[g, :, :, o] = canon_live[g, :, :, o]
                order = canon_rank
            flat = np.flatnonzero(candidates)
            best = int(flat[np.argmin(order.ravel()[flat])])
            g, t, i, o = np.unravel_index(best, link._sizes)
            pick = np.zeros(link._sizes, bool)
            pick[g, t, i, o] = True
            chosen[link.path] |= chain_lib._uncanon(pick, link)
            n_prev = link._sizes[2] // link.tile
            unit = int(i) % n_prev
        return self.join(chosen)


def consistent_export(
    soft_masks: Mapping[str, ArrayLike],
    latents: Mapping[str, ArrayLike],
    target_rate: float,
    *,
    cfg: GCNConfig | None = None,
    n_nodes: int | None = None,
    chain: Chain | None = None,
) -> ExportResult:
    """Exact export of docs/methods.md#shared-notation with the guarantee of docs/methods.md#tcmp:
    crisp masks with zero dangling connections (`topology.dangling_connections` == 0) and exactly c
    = keep_count(N, r) kept entries whenever the search below finds such a set.

    soft_masks: {path: ψ_ℓ} (TCMP's consistent masks M̃), latents: {path: Ŵ_ℓ}, same keys: the
    tensors of `chain`, or the GCN's prunable tensors for `cfg` and `n_nodes`. Entries are
    ranked as in `shared.exact_export`: ψ descending, then |Ŵ| descending, then global index.

    1. Prefix: the largest k ≥ c such that the top-k entries have at most c live entries
       (`chain.live`, monotone in the kept set, so a binary search); keep those live entries.
    2. Seed: if that is empty (closing the first path would exceed c), keep one input→output
       path of one entry per link, taken backwards from the last link through the
       best-ranked live entries of the smallest prefix that has any.
    3. Fill: on a dangling-free set, adding one entry adds exactly itself or nothing (liveness
       is monotone and the set is a fixed point). Add the best-ranked "attachable" entries
       (source accessible, target co-accessible; query/key: input accessible, head live, other
       projection of the dim on) up to c. When none is left (the live sub-network is complete
       between its live units), add the best pair that makes one new unit (or attention dim)
       live; if only one entry was missing, then drop the worst-ranked entry whose removal
       leaves the rest live. Repeat.

    Exactly c is impossible when 0 < c < (number of links) (no path is that short): the
    export then keeps nothing. The search can also stop short of c (found only on tiny
    adversarial networks, e.g. one feature and one head) when no pair, or no removable
    entry, is found among the first `_MAX_PAIR_TRIALS` candidates, or when growing needs
    three or more entries at once. In every case the result has zero dangling connections and
    kept ≤ c: `kept` and `realized_rate` report what was achieved; `soft_rate` is 1 − Σψ / N
    and `rounding_changed` counts the entries whose decision differs from 1[ψ > 1/2].
    """
    if set(soft_masks) != set(latents):
        raise ValueError(
            f"soft_masks and latents name different tensors: {sorted(soft_masks)} "
            f"vs {sorted(latents)}"
        )
    shapes = {name: np.shape(m) for name, m in soft_masks.items()}
    for name, shape in shapes.items():
        if np.shape(latents[name]) != shape:
            raise ValueError(
                f"mask of {name!r} has shape {shape}, its latent tensor {np.shape(latents[name])}"
            )
    ones = {name: np.ones(shape, bool) for name, shape in shapes.items()}
    if chain is None:
        if cfg is None or n_nodes is None:
            raise ValueError("consistent_export needs chain=, or cfg= and n_nodes= of the GCN")
        check_gcn_masks(ones, cfg, n_nodes=n_nodes)
        chain = gcn_chain(
            cfg,
            n_nodes=n_nodes,
            n_features=shapes["block0/conv"][1],
            n_classes=shapes["classifier/kernel"][1],
        )
    else:
        chain.check(ones)
    net = _Network(shapes, chain)
    psi = net.join({name: np.asarray(m, np.float64) for name, m in soft_masks.items()})
    magnitude = np.abs(net.join({name: np.asarray(w, np.float64) for name, w in latents.items()}))
    if not (np.all(np.isfinite(psi)) and np.all(np.isfinite(magnitude))):
        raise ValueError("soft masks and latent tensors must be finite for the export")

    total = net.total
    target = keep_count(total, target_rate)
    order = np.lexsort((np.arange(total), -magnitude, -psi))  # best first
    rank = np.empty(total, np.int64)
    rank[order] = np.arange(total)

    def top(k: int) -> np.ndarray:
        keep = np.zeros(total, bool)
        keep[order[:k]] = True
        return keep

    def n_live(k: int) -> int:
        return int(net.live(top(k)).sum())

    # 1. Largest prefix whose live part fits: n_live(k) ≤ k, so k = c always fits.
    low, high = target, total
    if n_live(high) <= target:
        low = high
    while high - low > 1:  # invariant: n_live(low) ≤ c < n_live(high)
        mid = (low + high) // 2
        low, high = (mid, high) if n_live(mid) <= target else (low, mid)
    keep = net.live(top(low))

    # 2. Seed one path when closing the first path overshoots c.
    if not keep.any() and target > 0 and n_live(total) > 0:
        low, high = 0, total  # smallest prefix with a live entry: n_live(high) > 0
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if n_live(mid) > 0 else (mid, high)
        path = net.path(net.live(top(high)), rank)
        if path.sum() <= target:
            keep = net.live(path)

    # 3. Fill to exactly c with entries that add exactly themselves, or pairs.
    count = int(keep.sum())
    while count < target:
        attach, forward = net.frontier(keep)
        singles = attach & ~keep
        if singles.any():
            trial = keep.copy()
            trial[order[singles[order]][: target - count]] = True
        else:
            trial = _best_pair(net, keep, order, forward & ~attach & ~keep, count + 2)
            if trial is not None and target - count == 1:
                trial = _drop_one(net, trial, order, count + 1)  # a pair overshoots by one
            if trial is None:
                break
        trial = net.live(trial)
        added = int(trial.sum())
        if not count < added <= target:  # cannot happen on a dangling-free set (see above)
            break
        keep, count = trial, added

    masks = net.split(keep)
    return ExportResult(
        masks={name: masks[name].copy() for name in sorted(soft_masks)},
        kept=count,
        total=total,
        realized_rate=1.0 - count / total,
        soft_rate=float(1.0 - psi.sum() / total),
        rounding_changed=int(np.count_nonzero(keep != (psi > 0.5))),
    )


def _best_pair(
    net: _Network, keep: np.ndarray, order: np.ndarray, firsts: np.ndarray, expected: int
) -> np.ndarray | None:
    """keep plus two entries that make exactly both live (a new unit or attention dim): the
    first from `firsts` in rank order, the second its best-ranked attachable partner. None if
    the first `_MAX_PAIR_TRIALS` candidates have no such partner."""
    for first in order[firsts[order]][:_MAX_PAIR_TRIALS]:
        trial = keep.copy()
        trial[first] = True
        partners = net.frontier(trial)[0] & ~trial
        if not partners.any():
            continue
        trial[order[partners[order]][0]] = True
        if int(net.live(trial).sum()) == expected:
            return trial
    return None


def _drop_one(
    net: _Network, keep: np.ndarray, order: np.ndarray, expected: int
) -> np.ndarray | None:
    """keep minus its worst-ranked entry whose removal leaves the other entries live (the
    count drops by exactly one). None if the `_MAX_PAIR_TRIALS` worst entries have none."""
    for entry in order[keep[order]][::-1][:_MAX_PAIR_TRIALS]:
        trial = keep.copy()
        trial[entry] = False
        if int(net.live(trial).sum()) == expected:
            return trial
    return None


register("tcmp", tcmp)
