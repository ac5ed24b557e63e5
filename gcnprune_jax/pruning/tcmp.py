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

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import GCNConfig
from gcnprune_jax.pruning.api import (
    MaskContext,
    Masks,
    Params,
    PruningMethod,
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
    gcn_live,
    gcn_unit_states,
    hard_saturation,
    soft_saturation,
)

# Pair search of the export: how many first entries (in ψ order) to try before giving up.
_MAX_PAIR_TRIALS = 64


def tcmp(
    model: GCNConfig,
    n_nodes: int,
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
) -> PruningMethod:
    """The TCMP method of docs/methods.md#tcmp for the GCN `model` on graphs of `n_nodes` nodes.

    model, n_nodes: the network's structure, which defines accessibility (`topology.gcn_live`).
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

    aux = {path: a_ℓ (scalar)}; masks = {path: M̃_ℓ of Ŵ_ℓ's shape}; export =
    `consistent_export` for this model (zero dangling connections).
    """
    if not isinstance(model, GCNConfig):
        raise ConfigError(f"tcmp.model must be a GCNConfig, got {type(model).__name__}")
    if not (isinstance(n_nodes, int) and n_nodes >= 1):
        raise ConfigError(f"tcmp.n_nodes must be a positive int, got {n_nodes!r}")
    check_budget_options("tcmp", alpha, kappa_start, kappa_end, lam, warmup)
    if not tau_h > 0:
        raise ConfigError(f"tcmp.tau_h must be > 0, got {tau_h}")
    saturation = soft_saturation(tau_h)

    def init(latent: Params, key: jax.Array) -> Any:
        # Deterministic: thresholds come from the initial weights
        # (docs/methods.md#thresholds-and-temperature).
        del key
        return threshold_state(prunable_leaves(latent), alpha, control)

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        aux, factor = thresholds_of(aux, control, control_speed)
        kappa = held_anneal(
            ctx.step, ctx.total_steps, kappa_start, kappa_end, warmup if hold else 0.0
        )
        # docs/methods.md#tcmp: entry-wise magnitude mask, then only accessible and co-accessible
        # entries.
        magnitude = {
            name: band_stop(w, aux[name] * factor, kappa * aux[name] * factor, zero_floor)
            for name, w in prunable_leaves(latent).items()
        }
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
        return consistent_export(soft_masks, latents, target_rate, cfg=model, n_nodes=n_nodes)

    return PruningMethod("tcmp", init, mask, penalty, export, trainable_aux=control)


class _Network:
    """The prunable entries of one GCN as one flat boolean vector (paths sorted by name, then
    C order, as `shared.exact_export`), with the topology queries the export needs."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], cfg: GCNConfig, n_nodes: int):
        self.names = sorted(shapes)
        self.shapes = {name: tuple(shapes[name]) for name in self.names}
        sizes = [int(np.prod(self.shapes[name])) for name in self.names]
        self.offsets = dict(zip(self.names, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True))
        self.total = int(sum(sizes))
        self.cfg, self.n_nodes = cfg, n_nodes

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: flat[start : start + int(np.prod(shape))].reshape(shape)
            for (name, shape), start in zip(self.shapes.items(), self.offsets.values(), strict=True)
        }

    def join(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(parts[name]).ravel() for name in self.names])

    def live(self, keep: np.ndarray) -> np.ndarray:
        """The kept entries on some input→output path (`topology.gcn_live`), flat."""
        return self.join(gcn_live(self.split(keep), self.cfg, n_nodes=self.n_nodes))

    def frontier(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(attachable, forward), flat booleans over all entries, from the hard unit states of
        the kept set (`topology.gcn_unit_states` with h = min(1, x)).

        attachable: entries that are live once added to `keep` (by monotonicity of liveness):
          source unit accessible and target unit co-accessible; for query/key[h, i, j]: input i
          accessible, head h live and the other projection of dim j already on.
        forward: entries whose source side is reachable (input accessible; for query/key also
          the head live): the first half of a two-entry extension.
        """
        masks = {name: jnp.asarray(m, jnp.float32) for name, m in self.split(keep).items()}
        states = jax.tree.map(
            lambda s: np.asarray(s) > 0.5,
            gcn_unit_states(masks, self.cfg, n_nodes=self.n_nodes, h=hard_saturation),
        )
        attach, forward = {}, {}
        for name, shape in self.shapes.items():
            layer, kind = name.rsplit("/", 1)
            if kind == "kernel":
                acc_in, co_out = states[f"{name}/acc_in"], states[f"{name}/co_out"]
                forward[name] = np.broadcast_to(acc_in[:, None], shape)
                attach[name] = acc_in[:, None] & co_out[None, :]
                continue
            acc_in = states[f"{layer}/acc_in"][None, :, None]
            if kind == "conv":
                forward[name] = np.broadcast_to(acc_in, shape)
                attach[name] = acc_in & states[f"{layer}/co_out"][:, None, :]
            else:  # query or key: its partner projection must already be on
                head = states[f"{layer}/head_live"][:, None, None]
                other = states[f"{layer}/{'key' if kind == 'query' else 'query'}_on"]
                forward[name] = np.broadcast_to(acc_in & head, shape)
                attach[name] = acc_in & head & other[:, None, :]
        return self.join(attach), self.join(forward)

    def path(self, live: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """One input→output path (one conv entry per block, one entry per kernel) inside the
        non-empty live set `live`, choosing layer by layer from the classifier backwards the
        live entry of best rank into the unit already chosen. Flat boolean."""
        parts, ranks = self.split(live), self.split(rank)
        chosen = {name: np.zeros(shape, bool) for name, shape in self.shapes.items()}
        kernels = [f"fc{i}/kernel" for i in range(len(self.cfg.fc))] + ["classifier/kernel"]

        def best(candidates: np.ndarray, order: np.ndarray) -> int:
            return int(np.flatnonzero(candidates)[np.argmin(order[candidates])])

        unit = None  # the unit (input row of the later layer) the current layer must feed
        for name in reversed(kernels):
            if unit is None:
                flat = best(parts[name].ravel(), ranks[name].ravel())
                row, col = np.unravel_index(flat, self.shapes[name])
            else:
                col, row = unit, best(parts[name][:, unit], ranks[name][:, unit])
            chosen[name][row, col] = True
            unit = int(row)
        for b in reversed(range(len(self.cfg.filters))):
            name, filters = f"block{b}/conv", self.cfg.filters[b]
            head, out = divmod(unit % (self.cfg.heads * filters), filters)
            row = best(parts[name][head, :, out], ranks[name][head, :, out])
            chosen[name][head, row, out] = True
            unit = row
        return self.join(chosen)


def consistent_export(
    soft_masks: Mapping[str, ArrayLike],
    latents: Mapping[str, ArrayLike],
    target_rate: float,
    *,
    cfg: GCNConfig,
    n_nodes: int,
) -> ExportResult:
    """Exact export of docs/methods.md#shared-notation with the guarantee of docs/methods.md#tcmp:
    crisp masks with zero dangling connections (`topology.dangling_connections` == 0) and exactly c
    = keep_count(N, r) kept entries whenever the search below finds such a set.

    soft_masks: {path: ψ_ℓ} (TCMP's consistent masks M̃), latents: {path: Ŵ_ℓ}, same keys, the
    GCN's prunable tensors for `cfg` and `n_nodes`. Entries are ranked as in
    `shared.exact_export`: ψ descending, then |Ŵ| descending, then global index.

    1. Prefix: the largest k ≥ c such that the top-k entries have at most c live entries
       (`gcn_live`, monotone in the kept set, so a binary search); keep those live entries.
    2. Seed: if that is empty (closing the first path would exceed c), keep one input→output
       path of n_blocks + n_fc + 1 entries, taken backwards from the classifier through the
       best-ranked live entries of the smallest prefix that has any.
    3. Fill: on a dangling-free set, adding one entry adds exactly itself or nothing (liveness
       is monotone and the set is a fixed point). Add the best-ranked "attachable" entries
       (source accessible, target co-accessible; query/key: input accessible, head live, other
       projection of the dim on) up to c. When none is left (the live sub-network is complete
       between its live units), add the best pair that makes one new unit (or attention dim)
       live; if only one entry was missing, then drop the worst-ranked entry whose removal
       leaves the rest live. Repeat.

    Exactly c is impossible when 0 < c < n_blocks + n_fc + 1 (no path is that short): the
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
    check_gcn_masks(
        {name: np.ones(shape, bool) for name, shape in shapes.items()}, cfg, n_nodes=n_nodes
    )
    net = _Network(shapes, cfg, n_nodes)
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
