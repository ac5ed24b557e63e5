"""SSP: semi-structured cascade band-stop → weight sharing → gating, plus a rank surrogate
(docs/methods.md#ssp).

On one latent tensor Ŵ (G, I, O):
1. weight sharing: four candidate magnitudes per entry, tied within their group,
   z_entry = |Ŵ|, z_row = row rms, z_column = column rms, z_channel = channel rms
   (docs/methods.md#shared-notation);
2. gating: each channel g owns trainable logits γ_g ∈ R⁴, π_g = softmax(γ_g / τ_gate), and
   the gated magnitude is z = Σ_k π_{g,k} z_k. τ_gate anneals geometrically, so π_g becomes
   one-hot: each channel ends up pruned at one granularity. A single-channel tensor (FC
   kernel) has no "channel" option (it would remove the whole layer) and the classifier no
   "column" option (its columns are the class logits);
3. band-stop: ψ = b_{a_ℓ, κ_t a_ℓ}(z), W = Ŵ ⊙ ψ.
Loss: CE + L_budget + β · L_rank, L_rank = Σ_ℓ Σ_g ‖ψ_ℓ[g]‖_* / Σ_ℓ Σ_g √(I_ℓ O_ℓ): the
nuclear norms of the channels' mask matrices (the convex surrogate of their rank), divided by
what all-ones masks would give, so that β weighs a dense network's rank term as β.

The gate logits are method state trained with the latent weights (`trainable_aux`): aux =
(frozen, trainable) = ({path: a_ℓ}, {path: γ_ℓ of shape (G, 4)}).

The export (`gated_export`) honours the gates: each channel's crisp mask has the pure
structure its gate chose (entry: any; row: a union of full rows; column: a union of full
columns; channel: all or nothing), and the total kept count is exactly c
(docs/methods.md#shared-notation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gcnprune_jax.errors import ConfigError
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
    GRANULARITIES,
    ExportResult,
    as_gio,
    band_stop,
    budget_control_term,
    check_budget_options,
    from_gio,
    group_rms,
    held_anneal,
    init_threshold,
    keep_count,
    ramped_budget_loss,
    threshold_factor,
)

# Gate index k of each granularity: γ_g[k] is the logit of KINDS[k].
KINDS = GRANULARITIES  # ("entry", "row", "column", "channel")


def candidates(latent_gio: jax.Array) -> jax.Array:
    """The weight-sharing candidates of docs/methods.md#ssp, step 1, stacked on a leading axis.

    latent_gio: Ŵ, (G, I, O). Returns (4, G, I, O): |Ŵ|, row rms, column rms, channel rms,
    in the order of KINDS, each broadcast to the tensor's shape.
    """
    return jnp.stack([jnp.abs(latent_gio)] + [group_rms(latent_gio, kind) for kind in KINDS[1:]])


def gate_probabilities(logits: ArrayLike, temperature: ArrayLike) -> jax.Array:
    """π_g = softmax(γ_g / τ_gate) over the four granularities (docs/methods.md#ssp, step 2).

    logits: (G, 4); temperature: τ_gate > 0 (scalar). Returns (G, 4), rows summing to 1;
    one-hot at argmax γ_g as τ_gate → 0 (ties split evenly).
    """
    return jax.nn.softmax(jnp.asarray(logits) / temperature, axis=-1)


def _kind_bias(n_channels: int, name: str = "", logit_layer: str | None = None) -> jax.Array:
    """Additive logit bias (4,) that rules granularities out: −inf on "channel" for a
    single-channel tensor (a plain kernel such as an FC layer), where pruning the channel
    would remove the whole layer and disconnect the network; and on "column" for the
    classifier, whose columns are the class logits (pruning one makes its class
    unpredictable): the tensor named `logit_layer`, or by default one whose path ends in
    `classifier/kernel`. 0 otherwise."""
    blocked = {"channel"} if n_channels == 1 else set()
    if name == logit_layer if logit_layer is not None else name.endswith("classifier/kernel"):
        blocked |= {"column", "channel"}
    return jnp.asarray([-jnp.inf if k in blocked else 0.0 for k in KINDS], jnp.float32)


def gated_magnitude(latent_gio: jax.Array, probabilities: jax.Array) -> jax.Array:
    """z = Σ_k π_{g,k} z_k (docs/methods.md#ssp, step 2). latent_gio (G, I, O),
    probabilities (G, 4). Returns (G, I, O), non-negative."""
    return jnp.einsum("kgio,gk->gio", candidates(latent_gio), probabilities)


def nuclear_norm(matrices: jax.Array, iterations: int = 12, eps: float = 1e-4) -> jax.Array:
    """Σ of singular values of each trailing (I, O) matrix: (..., I, O) -> (...).

    ‖M‖_* = tr((G)^{1/2}) with G the smaller Gram matrix (MᵀM or MMᵀ), the square root by
    the coupled Newton–Schulz iteration (Higham 2008, §6.7) on A = G/‖G‖_F + εI, whose
    eigenvalues lie in [ε, 1 + ε]: Y₀ = A, Z₀ = I, T = (3I − Z Y)/2, Y ← Y T, Z ← T Z, so
    Y → A^{1/2}; then ‖M‖_* ≈ √‖G‖ (tr Y − n √ε). The shift keeps Z (→ A^{−1/2}) below
    ε^{−1/2}: without it the iteration diverged in float32 on nearly rank-one masks. A zero
    singular value contributes exactly 0, a nonzero σ about √(σ² + ε‖G‖) − √(ε‖G‖).
    Only matrix products: the gradient is finite for every input, including coinciding
    singular values (all-ones, repeated rows) and vanishing ones (all zeros), where an SVD's
    singular-vector derivative has 1/(σ_i² − σ_j²) factors and √ is not differentiable at 0.
    Why not LAPACK: several SVD or eigh calls in the fold-vmapped train step deadlocked the
    CPU backend (jax 0.10.2, 2 cores) in this project's runs; matrix products do not.
    Tiny matrices: a matrix whose largest entry is below `_TINY` is divided by that entry
    first and the result multiplied back (‖sM‖_* = s‖M‖_*, and by Euler's identity for this
    1-homogeneous function the gradient is the same). Without it the squares inside ‖G‖_F
    underflow in float32 once the entries fall near 1e-11 (a mask driven to ~0, as SSP's
    `fc0` on a small GCN at r = 0.98), the normalized A has entries far above 1, the iteration
    diverges and the loss becomes inf. Larger matrices are divided by exactly 1: the same bits.
    """
    peak = jax.lax.stop_gradient(jnp.max(jnp.abs(matrices), axis=(-2, -1), keepdims=True))
    rescale = jnp.where((peak > 0) & (peak < _TINY), peak, 1.0)
    return _nuclear_norm(matrices / rescale, iterations, eps) * rescale[..., 0, 0]


# Below this largest entry, `nuclear_norm` rescales a matrix before forming its Gram matrix.
_TINY = 2.0**-12


def _nuclear_norm(matrices: jax.Array, iterations: int, eps: float) -> jax.Array:
    """`nuclear_norm` without the rescaling of tiny matrices."""
    n_in, n_out = matrices.shape[-2], matrices.shape[-1]
    if n_in >= n_out:
        gram = jnp.swapaxes(matrices, -1, -2) @ matrices
    else:
        gram = matrices @ jnp.swapaxes(matrices, -1, -2)
    size = gram.shape[-1]
    norm = _safe_norm(gram)[..., None, None]
    eye = jnp.broadcast_to(jnp.eye(size, dtype=gram.dtype), gram.shape)
    y = gram / jnp.where(norm > 0, norm, 1.0) + eps * eye

    def step(_: int, yz: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        y, z = yz
        t = 0.5 * (3.0 * eye - z @ y)
        return y @ t, t @ z

    y, _ = jax.lax.fori_loop(0, iterations, step, (y, eye))
    root_norm = jnp.sqrt(jnp.where(norm > 0, norm, 1.0)) * (norm > 0)
    trace = jnp.trace(y, axis1=-2, axis2=-1) - size * np.sqrt(eps)
    return jnp.maximum(trace, 0.0) * root_norm[..., 0, 0]


def _safe_norm(matrices: jax.Array) -> jax.Array:
    """Frobenius norm of each trailing (I, O) matrix, with a zero (finite) gradient at 0."""
    square = jnp.sum(jnp.square(matrices), axis=(-2, -1))
    positive = square > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, square, 1.0)), 0.0)


RANK_FORMS = ("normalized", "nuclear")


def rank_surrogate(masks: Mapping[str, jax.Array], form: str = "normalized") -> jax.Array:
    """The tensor-rank surrogate of docs/methods.md#ssp, step 4, over all channels of all masks.

    masks: {path: ψ_ℓ, (I, O) or (G, I, O)}. Returns a scalar in [0, 1].
    form "nuclear" (docs/methods.md#ssp as written, normalized): Σ_ℓ Σ_g ‖ψ_ℓ[g]‖_* / Σ_ℓ Σ_g √(I_ℓ
      O_ℓ); all-ones masks give 1, all-zero masks 0, so it also rewards emptier masks.
    form "normalized" (default, an extension): per channel q_g = (‖ψ_g‖_* / ‖ψ_g‖_F − 1) /
      (√min(I, O) − 1), 0 for rank ≤ 1 (a union of full rows, of full columns, a whole or an
      empty channel) up to 1 for a full-rank flat spectrum, averaged with weights I·O. It is
      invariant to the mask's scale, so it prefers structure without pushing masks to zero.
    """
    if form not in RANK_FORMS:
        raise ConfigError(f"ssp rank form must be one of {RANK_FORMS}, got {form!r}")
    total, scale = jnp.zeros((), jnp.float32), 0.0
    for psi in masks.values():
        gio = as_gio(psi)
        n_in, n_out = gio.shape[1], gio.shape[2]
        nuclear = nuclear_norm(gio)
        if form == "nuclear":
            total = total + jnp.sum(nuclear)
            scale += gio.shape[0] * float(np.sqrt(n_in * n_out))
            continue
        scale += gio.shape[0] * n_in * n_out
        top = float(np.sqrt(min(n_in, n_out))) - 1.0
        if top <= 0:  # a vector has rank <= 1 whatever its pattern
            continue
        frobenius = _safe_norm(gio)
        ratio = jnp.where(frobenius > 0, nuclear / jnp.where(frobenius > 0, frobenius, 1.0), 1.0)
        total = total + n_in * n_out * jnp.sum(jnp.maximum(ratio - 1.0, 0.0) / top)
    return total / scale


def ssp(
    alpha: float = 0.5,
    kappa_start: float = 0.2,
    kappa_end: float = 0.005,
    lam: float = 1e3,
    warmup: float = 0.5,
    hold: bool = True,
    beta: float = 1.0,
    gate_tau_start: float = 1.0,
    gate_tau_end: float = 0.01,
    gate_scale: float = 10.0,
    budget_on_gates: bool = False,
    rank_on_weights: bool = False,
    rank_form: str = "normalized",
    zero_floor: bool = False,
    control: bool = True,
    control_speed: float = 10.0,
    select: Select | None = None,
    logit_layer: str | None = None,
) -> PruningMethod:
    """The SSP method of docs/methods.md#ssp.

    alpha, kappa_start, kappa_end, lam, warmup, hold: the band-stop threshold, its annealed
    relative temperature, the budget loss and its warmup, as in CTF (`pruning.ctf.ctf`).
    beta: β, weight of the rank surrogate (`rank_surrogate`); 0 switches it off.
    rank_form: "normalized" (default) or "nuclear" (docs/methods.md#ssp as written), see
      `rank_surrogate`. Measured on synthetic data at r = 0.9 with the reconstructed papers' form: β
      = 1 drove the gates to "channel" and the soft rate to 0.990 (25% accuracy), since an empty
      mask has the smallest nuclear norm of all.
    gate_tau_start, gate_tau_end: τ_gate's geometric schedule, held at its start during the
      warmup when `hold` (as κ), so gates settle once the budget has its final target.
    gate_scale: γ = gate_scale · θ with θ the trained state: with Adam every parameter moves
      about one learning rate per step, so this makes the logits move gate_scale times
      faster than the weights (an extension; 1 trains γ directly).
    budget_on_gates: let the budget's gradient reach the gate logits. Off by default: the
      budget is the same whatever the granularity, but since mean |Ŵ| < rms |Ŵ| its gradient
      systematically favours the entry gate (measured: every gate chose "entry"), so the
      gates are left to the cross-entropy and the rank term.
    rank_on_weights: let the rank term's gradient reach the weights. Off by default: the
      nuclear norm shrinks as masks empty, so on the weights it acts as a second sparsity
      term that fights the budget (measured on synthetic data at r = 0.9, β = 5: soft rate
      0.979); on the gates alone it only arbitrates between granularities.
    zero_floor: rescale the band-stop so it is exactly 0 at Ŵ = 0 at every temperature
      (`shared.band_stop`); without it the budget is out of reach while κ is high.
    control, control_speed: the budget controller, as in CTF (`pruning.ctf.ctf`); the
      trained state is then {"gates": {path: θ_ℓ}, "shift": θ} instead of {path: θ_ℓ}. On by
      default: chosen on validation data (`experiments/results/tuning_*.md`, docs/methods.md).
    select: which leaves are pruned (`api.prunable_leaves`); None = the GCN's rule.
    logit_layer: the path of the tensor whose columns are the class logits (no column or channel
      pruning there); None: a path ending in `classifier/kernel` (the GCN's). `fit.prune` with
      a `chain` passes its last link.

    aux = ({path: a_ℓ}, {path: θ_ℓ (G, 4)}), θ initialized to 0 (all granularities equal).
    """
    check_budget_options("ssp", alpha, kappa_start, kappa_end, lam, warmup)
    if not beta >= 0:
        raise ConfigError(f"ssp.beta must be >= 0, got {beta}")
    if not 0 < gate_tau_end <= gate_tau_start:
        raise ConfigError(
            f"ssp needs 0 < gate_tau_end <= gate_tau_start, got {gate_tau_end} and {gate_tau_start}"
        )
    if not gate_scale > 0:
        raise ConfigError(f"ssp.gate_scale must be > 0, got {gate_scale}")
    if rank_form not in RANK_FORMS:
        raise ConfigError(f"ssp.rank_form must be one of {RANK_FORMS}, got {rank_form!r}")

    def init(latent: Params, key: jax.Array) -> tuple[dict[str, Any], dict[str, Any]]:
        del key  # deterministic: thresholds from the initial weights, gates all equal
        leaves = prunable_leaves(latent, select)
        thresholds = {name: init_threshold(w, alpha) for name, w in leaves.items()}
        gates = {
            name: jnp.zeros((as_gio(w).shape[0], len(KINDS)), jnp.float32)
            for name, w in leaves.items()
        }
        if control:
            return thresholds, {"gates": gates, "shift": jnp.zeros((), jnp.float32)}
        return thresholds, gates

    def gates_of(trained: Any) -> Any:
        return trained["gates"] if control else trained

    def gate_temperature(ctx: MaskContext) -> jax.Array:
        return held_anneal(
            ctx.step, ctx.total_steps, gate_tau_start, gate_tau_end, warmup if hold else 0.0
        )

    def masks_with(
        latent: Params, aux: Any, ctx: MaskContext, gates_grad: bool, weights_grad: bool
    ) -> Masks:
        thresholds, trained = aux
        gates = gates_of(trained)
        factor = threshold_factor(trained["shift"], control_speed) if control else 1.0
        kappa = held_anneal(
            ctx.step, ctx.total_steps, kappa_start, kappa_end, warmup if hold else 0.0
        )
        tau_gate = gate_temperature(ctx)
        masks = {}
        for name, w in prunable_leaves(latent, select).items():
            w_gio = as_gio(w if weights_grad else jax.lax.stop_gradient(w))
            logits = gate_scale * gates[name] + _kind_bias(w_gio.shape[0], name, logit_layer)
            pi = gate_probabilities(
                logits if gates_grad else jax.lax.stop_gradient(logits), tau_gate
            )
            z = gated_magnitude(w_gio, pi)
            a = thresholds[name] * factor
            masks[name] = from_gio(band_stop(z, a, kappa * a, zero_floor), jnp.shape(w))
        return masks

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        return masks_with(latent, aux, ctx, True, True)

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks) -> jax.Array:
        # Same values as `masks`; only which parameters each term's gradient reaches differs.
        budget_masks = masks if budget_on_gates else masks_with(latent, aux, ctx, False, True)
        loss = ramped_budget_loss(
            budget_masks, ctx.target_rate, ctx.step, ctx.total_steps, warmup, lam
        )
        if beta > 0:
            rank_masks = masks if rank_on_weights else masks_with(latent, aux, ctx, True, False)
            loss = loss + beta * rank_surrogate(rank_masks, rank_form)
        if control:
            loss = loss + budget_control_term(
                aux[1]["shift"], masks, ctx.target_rate, ctx.step, ctx.total_steps, warmup
            )
        return loss

    def export(
        soft_masks: Mapping[str, ArrayLike],
        latents: Mapping[str, ArrayLike],
        target_rate: float,
        *,
        aux: Any,
    ) -> ExportResult:
        return gated_export(
            soft_masks, latents, target_rate, chosen_kinds(gates_of(aux[1]), logit_layer)
        )

    return PruningMethod("ssp", init, mask, penalty, export, trainable_aux=True, select=select)


def chosen_kinds(gates: Mapping[str, ArrayLike], logits: str | None = None) -> dict[str, list[str]]:
    """{path: [granularity per channel]}: argmax of each channel's gate logits, i.e. the
    one-hot limit of π_g as τ_gate → 0 (ties go to the finer granularity, KINDS order).
    Ruled-out granularities are never chosen (see `_kind_bias`)."""
    out = {}
    for name, g in gates.items():
        g = np.asarray(g, np.float64) + np.asarray(
            _kind_bias(np.shape(g)[0], name, logits), np.float64
        )
        out[name] = [KINDS[k] for k in np.argmax(g, axis=-1).tolist()]
    return out


def _groups(shape: tuple[int, int, int], kind: str) -> np.ndarray:
    """Group id of every entry of one (I, O) channel for `kind`, in C order: (I·O,) ints."""
    n_in, n_out = shape[1], shape[2]
    rows, cols = np.indices((n_in, n_out))
    return {
        "entry": rows * n_out + cols,
        "row": rows,
        "column": cols,
        "channel": np.zeros_like(rows),
    }[kind].ravel()


def check_structure(mask: ArrayLike, kinds: list[str]) -> list[str]:
    """The channels of one crisp mask ((I, O) or (G, I, O)) whose pattern is not of the pure
    structure of their kind; [] when every channel honours its gate. Messages name them."""
    gio = np.asarray(mask).astype(bool)
    gio = gio[None] if gio.ndim == 2 else gio
    if gio.shape[0] != len(kinds):
        raise ValueError(f"{len(kinds)} kinds for a mask of {gio.shape[0]} channels")
    bad = []
    for g, kind in enumerate(kinds):
        m = gio[g]
        ok = {
            "entry": True,
            "row": bool(np.all(m.all(axis=1) | ~m.any(axis=1))),
            "column": bool(np.all(m.all(axis=0) | ~m.any(axis=0))),
            "channel": bool(m.all() or not m.any()),
        }[kind]
        if not ok:
            bad.append(f"channel {g} ({kind})")
    return bad


def gated_export(
    soft_masks: Mapping[str, ArrayLike],
    latents: Mapping[str, ArrayLike],
    target_rate: float,
    kinds: Mapping[str, list[str]],
) -> ExportResult:
    """Exact export (docs/methods.md#shared-notation) that keeps each channel's gate-chosen
    structure (docs/methods.md#ssp).

    soft_masks, latents: {path: (I, O) or (G, I, O)}; kinds: {path: [kind per channel]}.
    Each channel is cut into the groups of its kind (entries, full rows, full columns or the
    whole channel), each group scored by its mean ψ (ties: larger rms |Ŵ|, then position).
    Groups are taken in score order while they fit in c = keep_count(N, r), skipping those
    that do not, so the total is exactly c whenever enough groups are small enough. If not
    (no entry-kind channel has room left), the best remaining group is cut to its top
    entries by |Ŵ| and its channel is reported as "entry" instead: ExportResult.details
    lists such channels under "overridden". details["granularity"] is what each channel's
    crisp mask honours.
    """
    if set(soft_masks) != set(latents) or set(kinds) != set(latents):
        raise ValueError(
            "soft_masks, latents and kinds must name the same tensors: "
            f"{sorted(soft_masks)}, {sorted(latents)}, {sorted(kinds)}"
        )
    names = sorted(soft_masks)
    granularity = {name: list(kinds[name]) for name in names}
    # Per group: score, magnitude, size, and where its entries lie (tensor, channel, group id).
    score, magnitude, size, owner = [], [], [], []
    channel_groups: dict[tuple[str, int], np.ndarray] = {}
    total_soft, total = 0.0, 0
    for t, name in enumerate(names):
        psi = np.asarray(soft_masks[name], np.float64)
        w = np.asarray(latents[name], np.float64)
        if psi.shape != w.shape or psi.ndim not in (2, 3):
            raise ValueError(f"mask and latent of {name!r}: shapes {psi.shape} and {w.shape}")
        if not (np.all(np.isfinite(psi)) and np.all(np.isfinite(w))):
            raise ValueError("soft masks and latent tensors must be finite for the export")
        psi_g, w_g = (psi[None], w[None]) if psi.ndim == 2 else (psi, w)
        if len(granularity[name]) != psi_g.shape[0]:
            raise ValueError(
                f"{name!r}: {len(granularity[name])} gate kinds for {psi_g.shape[0]} channels"
            )
        total_soft += float(psi.sum())
        total += psi.size
        for g, kind in enumerate(granularity[name]):
            if kind not in KINDS:
                raise ValueError(f"{name!r} channel {g}: unknown kind {kind!r}")
            ids = _groups(psi_g.shape, kind)
            channel_groups[(name, g)] = ids
            n_groups = int(ids.max()) + 1
            counts = np.bincount(ids, minlength=n_groups)
            score.append(np.bincount(ids, psi_g[g].ravel(), n_groups) / counts)
            magnitude.append(
                np.sqrt(np.bincount(ids, np.square(w_g[g]).ravel(), n_groups) / counts)
            )
            size.append(counts)
            owner.append(
                np.stack([np.full(n_groups, t), np.full(n_groups, g), np.arange(n_groups)], 1)
            )
    score_a = np.concatenate(score)
    magnitude_a = np.concatenate(magnitude)
    size_a = np.concatenate(size)
    owner_a = np.concatenate(owner)
    kept_target = keep_count(total, target_rate)

    order = np.lexsort((np.arange(score_a.size), -magnitude_a, -score_a))
    taken = np.zeros(score_a.size, bool)
    # The longest prefix that fits, then the rest one by one (skipping what does not fit).
    prefix = int(np.searchsorted(np.cumsum(size_a[order]), kept_target, side="right"))
    taken[order[:prefix]] = True
    room = kept_target - int(size_a[order[:prefix]].sum())
    for i in order[prefix:]:
        if room == 0:
            break
        if size_a[i] <= room:
            taken[i] = True
            room -= int(size_a[i])

    keep = {name: np.zeros(np.shape(soft_masks[name]), bool) for name in names}

    def view(name: str) -> np.ndarray:
        return keep[name][None] if keep[name].ndim == 2 else keep[name]

    for i in np.flatnonzero(taken):
        t, g, gid = owner_a[i]
        name = names[t]
        flat = view(name)[g].reshape(-1)
        flat[channel_groups[(name, g)] == gid] = True
    overridden = []
    if room > 0:
        # No small groups left: cut the best group that does not fit to its largest entries.
        i = next(i for i in order if not taken[i])
        t, g, gid = owner_a[i]
        name = names[t]
        w_g = np.asarray(latents[name], np.float64)
        w_g = w_g[None] if w_g.ndim == 2 else w_g
        members = np.flatnonzero(channel_groups[(name, g)] == gid)
        values = np.abs(w_g[g].reshape(-1)[members])
        chosen = members[np.lexsort((members, -values))[:room]]
        view(name)[g].reshape(-1)[chosen] = True
        overridden.append(f"{name}[{g}]: {granularity[name][g]} -> entry")
        granularity[name][g] = "entry"
        room = 0

    kept = sum(int(m.sum()) for m in keep.values())
    assert kept == kept_target, (kept, kept_target)
    changed = sum(
        int(np.count_nonzero(keep[n] != (np.asarray(soft_masks[n]) > 0.5))) for n in names
    )
    return ExportResult(
        masks=keep,
        kept=kept,
        total=total,
        realized_rate=1.0 - kept / total,
        soft_rate=1.0 - total_soft / total,
        rounding_changed=changed,
        details={"granularity": granularity, "overridden": overridden},
    )


register("ssp", ssp)

__all__ = [
    "KINDS",
    "RANK_FORMS",
    "candidates",
    "check_structure",
    "chosen_kinds",
    "gate_probabilities",
    "gated_export",
    "gated_magnitude",
    "nuclear_norm",
    "rank_surrogate",
    "ssp",
]
