"""The notation shared by all pruning methods (docs/methods.md#shared-notation), as pure functions.

The JAX functions (`as_gio` … `budget_loss`) are jit-able and differentiable; they run inside
the one compiled train step. `keep_count`, `exact_export` and `realized_rate` are numpy: they
run once, at export, outside jit, and must be exact rather than differentiable.

Shapes: a prunable tensor Ŵ is viewed as (G, I, O) — G channels, I rows (inputs), O columns
(outputs); a plain (I, O) kernel is the G = 1 case.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gcnprune_jax.errors import ConfigError

GRANULARITIES = ("entry", "row", "column", "channel")
# Relative budget excess at which the controller's signal saturates (`budget_control_term`).
_CONTROL_DEADBAND = 1e-3

# Axes of the (G, I, O) view that each group statistic reduces over
# (docs/methods.md#group-statistics, group statistics).
_GROUP_AXES = {"row": (2,), "column": (1,), "channel": (1, 2)}


def as_gio(x: jax.Array) -> jax.Array:
    """View a prunable tensor as (G, I, O) (docs/methods.md#prunable-tensors).

    x: (I, O) -> (1, I, O); (G, I, O) is returned as is (the GCN's heads are its channels);
    a convolution kernel (k_1, …, k_n, I, O) with n >= 2 spatial axes (e.g. a Flax
    `nnx.Conv` kernel (kh, kw, I, O)) -> (1, k_1 ⋯ k_n · I, O), so a column is one output
    filter (all taps, all inputs) and a row one input channel at one tap. A 1-D leaf has no
    such view and is refused.
    """
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    if x.ndim >= 4:
        return x.reshape(1, -1, x.shape[-1])
    raise ValueError(
        f"a prunable tensor is (I, O), (G, I, O) or a convolution kernel (..., I, O), got "
        f"shape {x.shape}"
    )


def from_gio(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Undo `as_gio`: (1, I, O) -> `shape` = (I, O); a 3-D `shape` passes x through; a
    convolution kernel's (1, K·I, O) view goes back to its (k_1, …, k_n, I, O) shape.

    x: (G, I, O), as returned by `as_gio` for a tensor of `shape`.
    """
    shape = tuple(shape)
    if len(shape) == 2:
        expected = (1, *shape)
    elif len(shape) == 3:
        expected = shape
    else:
        expected = (1, int(np.prod(shape[:-1])), shape[-1])
    if x.shape != expected:
        raise ValueError(f"cannot view a (G, I, O) array of shape {x.shape} as {shape}")
    return x.reshape(shape)


def band_stop(
    x: ArrayLike, threshold: ArrayLike, temperature: ArrayLike, zero_floor: bool = False
) -> jax.Array:
    """The band-stop b_{a,τ}(x) = s((x − a)/τ) + s((−x − a)/τ) of docs/methods.md#shared-notation,
    entry-wise.

    zero_floor: return (b − b(0)) / (1 − b(0)) instead, with b(0) = 2 s(−a/τ) the band-stop's
      floor. The plain b never falls below b(0) (0.24 at τ = 0.5 a), so a soft budget of more
      than 1 − b(0) pruned is out of reach while the temperature is high: the budget loss
      then drives every weight deep into the stop band, and once τ anneals the soft rate
      overshoots the target (docs/methods.md, "zero floor"). The rescaled band-stop is 0 at
      x = 0 for every τ, still in [0, 1], even and monotone in |x|, and tends to the same hard
      mask 1[|x| > a] as τ → 0 (b(0) → 0).

    x: any shape; threshold a > 0 and temperature τ > 0 broadcast against it
    (docs/methods.md#thresholds-and-temperature takes τ = κ · a, so callers pass `kappa *
    threshold`). Returns x's shape, values in [0, 1]: ≈ 0 in the stop band |x| < a, ≈ 1 outside, →
    1[|x| > a] as τ → 0.

    The sum of two logistics never exceeds 1 because their arguments sum to −2a/τ ≤ 0.
    `jax.nn.sigmoid` saturates to exactly 0 or 1 instead of overflowing, so values and
    gradients stay finite for any τ > 0 (the gradient peaks at 1/(4τ) on the band edge).
    """
    x = jnp.asarray(x)
    b = jax.nn.sigmoid((x - threshold) / temperature) + jax.nn.sigmoid(
        (-x - threshold) / temperature
    )
    if not zero_floor:
        return b
    floor = 2.0 * jax.nn.sigmoid(-jnp.asarray(threshold) / temperature)
    return jnp.clip((b - floor) / (1.0 - floor), 0.0, 1.0)


def _safe_rms(x: jax.Array, axis: tuple[int, ...]) -> jax.Array:
    """rms over `axis` (keepdims), with a zero (finite) gradient on all-zero groups.

    sqrt has an infinite derivative at 0, and 0 · inf = nan would poison the whole gradient.
    The double `where` keeps the sqrt's argument positive in both branches, so its derivative
    is finite and then discarded; no eps biases the non-zero groups.
    """
    mean_square = jnp.mean(jnp.square(x), axis=axis, keepdims=True)
    positive = mean_square > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, mean_square, 1.0)), 0.0)


def group_rms(latent_gio: jax.Array, kind: str) -> jax.Array:
    """Group statistic of docs/methods.md#group-statistics (group statistics), broadcast back to (G,
    I, O).

    latent_gio: Ŵ, (G, I, O). kind:
      "entry":   Ŵ itself (the band-stop is even, so Ŵ and |Ŵ| give the same mask);
      "row":     row[g, i] = rms_o Ŵ[g, i, o];
      "column":  col[g, o] = rms_i Ŵ[g, i, o];
      "channel": chan[g]   = rms_{i,o} Ŵ[g, i, o].
    Returns (G, I, O). The gradient is finite (zero) on a group that is all zeros.
    """
    if latent_gio.ndim != 3:
        raise ValueError(f"group_rms expects a (G, I, O) tensor, got shape {latent_gio.shape}")
    if kind == "entry":
        return latent_gio
    if kind not in _GROUP_AXES:
        raise ValueError(f"kind must be one of {GRANULARITIES}, got {kind!r}")
    return jnp.broadcast_to(_safe_rms(latent_gio, _GROUP_AXES[kind]), latent_gio.shape)


def init_threshold(latent_at_init: ArrayLike, alpha: float = 0.5) -> jax.Array:
    """Threshold scale a_ℓ = α · rms(Ŵ_ℓ at initialization) of docs/methods.md#shared-notation.

    latent_at_init: one tensor Ŵ_ℓ, any shape. Returns a scalar (one threshold per tensor).
    """
    return alpha * jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(latent_at_init))))


def anneal(
    step: ArrayLike, total_steps: ArrayLike, start: float = 0.5, end: float = 0.005
) -> jax.Array:
    """Temperature factor κ_t of docs/methods.md#thresholds-and-temperature: geometric decay from
    κ_0 = `start` to κ_min = `end`.

    κ_t = start · (end / start)^p with p = clip(step / (total_steps − 1), 0, 1): exactly
    `start` at step 0, `end` at the last step (total_steps − 1), held there after. With
    total_steps = 1 the single step gets `start`. step, total_steps: scalars (may be traced).
    Returns a float32 scalar.
    """
    last = jnp.maximum(jnp.asarray(total_steps, jnp.float32) - 1.0, 1.0)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / last, 0.0, 1.0)
    return start * jnp.power(jnp.float32(end / start), progress)


def held_anneal(
    step: ArrayLike, total_steps: ArrayLike, start: float, end: float, hold: float
) -> jax.Array:
    """κ_t held at `start` for the first `hold` fraction of the steps, then annealed
    geometrically (`anneal`) to `end` over the remaining steps; hold = 0 is `anneal`.
    Used with the budget warmup (`ramp_rate`): masks harden once the target is final."""
    if hold <= 0:
        return anneal(step, total_steps, start, end)
    total = jnp.asarray(total_steps, jnp.float32)
    first = jnp.floor(hold * total)
    return anneal(
        jnp.maximum(jnp.asarray(step, jnp.float32) - first, 0.0), total - first, start, end
    )


def ramp_rate(
    target_rate: ArrayLike, step: ArrayLike, total_steps: ArrayLike, warmup: float
) -> jax.Array:
    """The budget's target rate at `step`: Zhu & Gupta's cubic ramp from 0 to r over the
    first `warmup` fraction of the steps, then r (an extension of docs/methods.md#shared-notation;
    warmup 0 is the reconstructed papers' constant target).

    r_t = r · (1 − (1 − p)³), p = min(step / (warmup · total_steps), 1). Why: the band-stop
    never falls below 2 s(−1/κ) (0.24 at κ_0 = 0.5), so a high constant target is out of
    reach while the temperature is still high, and the budget then drives every weight to
    zero at once before the cross-entropy can choose which to keep (measured: CTF at r = 0.98
    on SBU collapsed to chance within 50 epochs). All arguments may be traced.
    """
    r = jnp.asarray(target_rate, jnp.float32)
    if warmup <= 0:
        return r
    span = jnp.maximum(warmup * jnp.asarray(total_steps, jnp.float32), 1.0)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / span, 0.0, 1.0)
    return r * (1.0 - (1.0 - progress) ** 3)


def budget_loss(
    soft_masks: Any, target_rate: ArrayLike, n_total: ArrayLike, lam: float = 1e4
) -> jax.Array:
    """Budget loss of docs/methods.md#budget-loss: λ · ((Σ_ℓ Σ ψ(Ŵ_ℓ) − c) / N)², c = (1 − r) N.

    soft_masks: pytree of arrays ψ_ℓ (any shapes) summed together; target_rate r and n_total
    N may be traced (e.g. vmapped over rates). Returns a scalar.

    c is the unrounded (1 − r) N so that r can be traced; the integer target of the export
    (`keep_count`) differs by at most half an entry, i.e. at most λ / (4N²) in the loss.
    """
    total = sum(jnp.sum(leaf) for leaf in jax.tree.leaves(soft_masks))
    n_total = jnp.asarray(n_total, jnp.float32)
    target_kept = (1.0 - jnp.asarray(target_rate, jnp.float32)) * n_total
    return lam * jnp.square((total - target_kept) / n_total)


def ramped_budget_loss(
    soft_masks: Mapping[str, jax.Array],
    target_rate: ArrayLike,
    step: ArrayLike,
    total_steps: ArrayLike,
    warmup: float,
    lam: float,
) -> jax.Array:
    """`budget_loss` of {path: ψ_ℓ} against the target ramped in by `ramp_rate` (the budget
    term CTF, SSP and TCMP share), with N counted from the masks."""
    n_total = sum(m.size for m in soft_masks.values())
    rate = ramp_rate(target_rate, step, total_steps, warmup)
    return budget_loss(soft_masks, rate, n_total, lam)


def threshold_factor(shift: ArrayLike, speed: float) -> jax.Array:
    """The budget controller's common threshold factor t = exp(speed · θ) (θ: the trained
    scalar `shift`, 0 at init). Masks use a_ℓ · t; no gradient flows back through t (θ is
    driven by `budget_control_term` alone)."""
    return jnp.exp(speed * jax.lax.stop_gradient(jnp.asarray(shift, jnp.float32)))


def budget_control_term(
    shift: ArrayLike,
    soft_masks: Mapping[str, jax.Array],
    target_rate: ArrayLike,
    step: ArrayLike,
    total_steps: ArrayLike,
    warmup: float,
) -> jax.Array:
    """A zero-valued loss term whose gradient on θ = `shift` is −e, with
    e = (Σ_ℓ Σ ψ_ℓ − c_t) / N the budget's relative excess at the ramped target c_t
    (`ramp_rate`). A descent step on θ therefore raises the common threshold factor
    (`threshold_factor`) while more than c_t is kept, and lowers it while less is: an
    integral controller that removes the steady-state miss of the quadratic budget loss
    (whose minimum sits where its pull equals the cross-entropy's, short of c_t), and whose
    action does not depend on weights reaching the stop band's narrow edge once the
    temperature is low (docs/methods.md, "budget controller"). Its value is exactly 0, so
    the loss that the learning-rate rule watches is unchanged.
    """
    n_total = sum(m.size for m in soft_masks.values())
    kept = sum(jnp.sum(m) for m in soft_masks.values())
    rate = ramp_rate(target_rate, step, total_steps, warmup)
    excess = jax.lax.stop_gradient((kept - (1.0 - rate) * n_total) / n_total)
    # tanh(e / δ): about ±1 beyond δ = 1e-3 (0.1% of N), linear inside. Adam divides by the
    # gradient's running rms, whose memory is long: raw e, large while the target ramps and
    # small near the end, would leave the late corrections at a few percent of a step.
    signal = jnp.tanh(excess / _CONTROL_DEADBAND)
    theta = jnp.asarray(shift, jnp.float32)
    return -(theta - jax.lax.stop_gradient(theta)) * signal


def threshold_state(leaves: Mapping[str, ArrayLike], alpha: float, control: bool) -> Any:
    """CTF's and TCMP's method state: {path: a_ℓ} thresholds (`init_threshold`), or, with
    the budget controller, (thresholds, {"shift": θ = 0}) with θ trained."""
    thresholds = {name: init_threshold(w, alpha) for name, w in leaves.items()}
    return (thresholds, {"shift": jnp.zeros((), jnp.float32)}) if control else thresholds


def thresholds_of(aux: Any, control: bool, speed: float) -> tuple[Any, ArrayLike]:
    """(thresholds, common factor) of a `threshold_state`: the factor is the controller's
    `threshold_factor`, or 1 without it."""
    if control:
        return aux[0], threshold_factor(aux[1]["shift"], speed)
    return aux, 1.0


def budget_penalty(
    masks: Mapping[str, jax.Array], ctx: Any, warmup: float, lam: float, shift: Any = None
) -> jax.Array:
    """The budget term CTF, SSP and TCMP share: `ramped_budget_loss` at ctx's target rate,
    plus the controller's `budget_control_term` when its trained θ (`shift`) is given.
    ctx: a mask context (step, total_steps, target_rate)."""
    loss = ramped_budget_loss(masks, ctx.target_rate, ctx.step, ctx.total_steps, warmup, lam)
    if shift is not None:
        loss = loss + budget_control_term(
            shift, masks, ctx.target_rate, ctx.step, ctx.total_steps, warmup
        )
    return loss


def keep_count(n_total: int, target_rate: float) -> int:
    """Target kept count c of docs/methods.md#shared-notation: (1 − r) N rounded half up, as a
    Python int.

    Rounding rule: c = floor((1 − r) N + 1/2), computed exactly in rationals with r read as
    the shortest decimal that round-trips its float64 value (0.07 is 7/100). The plain
    float64 `floor((1 - r) * N + 0.5)` agrees except on exact halves, where representation
    error sometimes rounds down (r = 0.066, N = 250: 233.5 -> 233). r = 0 keeps all N
    entries, r = 1 keeps none, and 0 ≤ c ≤ N always.
    """
    n_total = operator.index(n_total)
    rate = float(target_rate)
    if n_total < 0:
        raise ValueError(f"n_total must be >= 0, got {n_total}")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"target rate must be in [0, 1], got {target_rate}")
    exact = (1 - Fraction(repr(rate))) * n_total + Fraction(1, 2)
    return exact.numerator // exact.denominator


class ExportResult(NamedTuple):
    """Crisp masks of the exact export (docs/methods.md#shared-notation) and what INTERFACE.md
    reports about them.

    masks: {path: bool array of that parameter's shape}.
    kept, total: kept and prunable entries; kept == keep_count(total, target_rate).
    realized_rate: 1 − kept / total.
    soft_rate: 1 − Σψ / N, the rate implied by the soft masks before export.
    rounding_changed: entries whose decision differs from 1[ψ > 1/2].
    details: a method's own export facts for result.json, or None (SSP: "granularity").
    """

    masks: dict[str, np.ndarray]
    kept: int
    total: int
    realized_rate: float
    soft_rate: float
    rounding_changed: int
    details: dict[str, Any] | None = None


def exact_export(
    soft_masks: Mapping[str, ArrayLike], latents: Mapping[str, ArrayLike], target_rate: float
) -> ExportResult:
    """Exact export of docs/methods.md#exact-export: crisp masks that keep exactly c = keep_count(N,
    r) entries.

    soft_masks: {path: ψ_ℓ}, latents: {path: Ŵ_ℓ}, same keys, each ψ_ℓ of its Ŵ_ℓ's shape.
    Start from m = 1[ψ > 1/2]; if Σm ≠ c keep the c entries with the largest ψ, ties broken
    by larger |Ŵ| first, then by the global index (paths sorted by name, then flat C-order
    index ascending). The result is a pure function of the inputs (deterministic).

    When Σm = c, the entries with ψ > 1/2 are exactly the top c by ψ (each exceeds every
    entry left out), so one ranking covers both cases of the reconstruction.
    """
    if set(soft_masks) != set(latents):
        raise ValueError(
            f"soft_masks and latents name different tensors: {sorted(soft_masks)} "
            f"vs {sorted(latents)}"
        )
    names = sorted(soft_masks)
    psi_parts, magnitude_parts = [], []
    for name in names:
        psi = np.asarray(soft_masks[name], np.float64)
        latent = np.asarray(latents[name])
        if psi.shape != latent.shape:
            raise ValueError(
                f"mask of {name!r} has shape {psi.shape}, its latent tensor {latent.shape}"
            )
        psi_parts.append(psi.ravel())
        magnitude_parts.append(np.abs(latent.astype(np.float64)).ravel())
    psi = np.concatenate(psi_parts) if names else np.zeros(0)
    magnitude = np.concatenate(magnitude_parts) if names else np.zeros(0)
    total = psi.size
    if total == 0:
        raise ValueError("exact_export needs at least one prunable entry")
    if not (np.all(np.isfinite(psi)) and np.all(np.isfinite(magnitude))):
        raise ValueError("soft masks and latent tensors must be finite for the exact export")

    kept = keep_count(total, target_rate)
    # np.lexsort sorts by its last key first: ψ descending, then |Ŵ| descending, then the
    # global index ascending. The index key makes the order total, hence deterministic.
    order = np.lexsort((np.arange(total), -magnitude, -psi))
    keep = np.zeros(total, bool)
    keep[order[:kept]] = True

    return ExportResult(
        masks=split_flat(keep, {n: np.shape(soft_masks[n]) for n in names}),
        kept=kept,
        total=total,
        realized_rate=1.0 - kept / total,
        soft_rate=float(1.0 - psi.sum() / total),
        rounding_changed=int(np.count_nonzero(keep != (psi > 0.5))),
    )


def split_flat(flat: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a flat array (tensors concatenated in `shapes`' order, C order) back into
    {path: array of its shape}: the inverse of the concatenation the exports rank over."""
    out, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def check_budget_options(
    name: str, alpha: float, kappa_start: float, kappa_end: float, lam: float, warmup: float
) -> None:
    """ConfigError naming `name.option` for the options every budget-trained method shares
    (threshold scale, temperature schedule, budget weight and warmup)."""
    if not alpha > 0:
        raise ConfigError(f"{name}.alpha must be > 0, got {alpha}")
    if not 0 < kappa_end <= kappa_start:
        raise ConfigError(
            f"{name} needs 0 < kappa_end <= kappa_start, got {kappa_end} and {kappa_start}"
        )
    if not lam >= 0:
        raise ConfigError(f"{name}.lam must be >= 0, got {lam}")
    if not 0 <= warmup <= 1:
        raise ConfigError(f"{name}.warmup must be in [0, 1], got {warmup}")


def realized_rate(masks: Mapping[str, ArrayLike]) -> float:
    """Pruning rate of crisp masks (docs/methods.md#pruning-rate): 1 − kept / total over all
    entries of all arrays.

    masks: {path: bool (or 0/1) array}; an entry is kept when it is non-zero.
    """
    arrays = [np.asarray(m) for m in masks.values()]
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError("realized_rate needs at least one mask entry")
    kept = sum(int(np.count_nonzero(a)) for a in arrays)
    return 1.0 - kept / total
