"""PMP: probabilistic magnitude pruning (docs/methods.md#pmp), and the pieces of MRMP
(docs/methods.md#mrmp).

Each prunable tensor Ŵ_ℓ gets a prior Q_ℓ scaled by its initial weights. An alignment loss
pulls the distribution of Ŵ_ℓ's entries towards Q_ℓ; then the fraction of entries with
|Ŵ| < a is r exactly when a = a_ℓ(r) = F_{|Q_ℓ|}^{-1}(r), a closed-form quantile, so any
pruning rate is met by thresholding without a budget term:

    ψ_ℓ = b_{a_ℓ(r), κ_t a_ℓ(r)}(Ŵ_ℓ)     (docs/methods.md#band-stop, relative temperature)
    loss = CE(Ŵ ⊙ ψ) + μ Σ_ℓ D(Ŵ_ℓ, Q_ℓ)

Priors and their scale s_ℓ (chosen so that the prior has the variance of the initial weights,
σ_ℓ² = rms(Ŵ_ℓ at init)²):
    "gaussian": N(0, s²),           s = σ,       a(r) = s √2 erfinv(r)
    "laplace":  Laplace(0, s),      s = σ / √2,  a(r) = −s ln(1 − r)
    "uniform":  U[−s, s],           s = √3 σ,    a(r) = s r

Alignment D (both computed on Ŵ / σ against the unit-variance prior, i.e. scale-free, so one
μ serves tensors of any weight scale):
    "wasserstein" (default): exact 1-D W2² between the sorted entries and the prior's
        quantiles at (k − ½)/n, divided by σ² (`wasserstein2`).
    "kl": KL(P‖Q) with P a Gaussian-kernel (differentiable) histogram of the entries
        (`kl_histogram`).

MRMP (docs/methods.md#mrmp) reuses the same masks for many rates on one latent pytree: `mrmp_masks`
vmaps a method's mask over a vector of rates; `mrmp` is PMP registered under its own name, whose
`mask` thresholds at ctx.target_rate, so a trained network is evaluated at any single r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import erfinv, ndtr, ndtri
from jax.typing import ArrayLike

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import path_name
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
    anneal,
    band_stop,
    budget_control_term,
    held_anneal,
    ramp_rate,
    thresholds_of,
)

PRIORS = ("gaussian", "laplace", "uniform")
ALIGNMENTS = ("wasserstein", "kl", "wasserstein_binned")
PRIOR_SCOPES = ("tensor", "global")
DEFAULT_RATES = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)

# Standard deviation of each prior per unit of its scale parameter s.
_STD_PER_SCALE = {"gaussian": 1.0, "laplace": math.sqrt(2.0), "uniform": 1.0 / math.sqrt(3.0)}

# Target rates are clipped to [_RATE_EPS, 1 − _RATE_EPS] inside `threshold`: r = 0 would give
# a = 0 (a band-stop of temperature 0, nan at x = 0) and r = 1 an infinite threshold.
_RATE_EPS = 1e-6
# Floor on the histogram masses of `kl_histogram` (P and Q), so log and its gradient stay
# finite on empty bins (e.g. outside a uniform prior's support).
_KL_FLOOR = 1e-7
# Quadrature points for the kernel-smoothed prior masses of `kl_histogram`.
_KL_PRIOR_POINTS = 4096


def _check_prior(prior: str) -> None:
    if prior not in PRIORS:
        raise ConfigError(f"pmp.prior must be one of {PRIORS}, got {prior!r}")


def prior_scale(prior: str, rms: ArrayLike) -> jax.Array:
    """The prior's scale parameter s for a tensor of init rms σ: the prior has variance σ².

    gaussian s = σ; laplace s = σ/√2 (variance 2s²); uniform on [−s, s] s = √3 σ (variance
    s²/3). An all-zero tensor (σ = 0) gets σ = 1, so thresholds and losses stay finite.
    """
    _check_prior(prior)
    rms = jnp.asarray(rms, jnp.float32)
    rms = jnp.where(rms > 0, rms, 1.0)
    return rms / _STD_PER_SCALE[prior]


def prior_std(prior: str, scale: ArrayLike) -> jax.Array:
    """Standard deviation σ of the prior with scale parameter s (inverse of `prior_scale`)."""
    _check_prior(prior)
    return jnp.asarray(scale, jnp.float32) * _STD_PER_SCALE[prior]


def threshold(prior: str, scale: ArrayLike, rate: ArrayLike) -> jax.Array:
    """a(r) = F_{|Q|}^{-1}(r) (docs/methods.md#pmp): if x ~ Q, P(|x| < a(r)) = r.

    gaussian s √2 erfinv(r); laplace −s ln(1 − r); uniform s r. scale s and rate r broadcast
    against each other and may be traced (e.g. r vmapped over rates); r is clipped to
    [1e-6, 1 − 1e-6] so a stays finite and positive.
    """
    _check_prior(prior)
    s = jnp.asarray(scale, jnp.float32)
    r = jnp.clip(jnp.asarray(rate, jnp.float32), _RATE_EPS, 1.0 - _RATE_EPS)
    if prior == "gaussian":
        return s * math.sqrt(2.0) * erfinv(r)
    if prior == "laplace":
        return -s * jnp.log1p(-r)
    return s * r


def _lower_quantiles(prior: str, p: jax.Array) -> jax.Array:
    """Unit-scale (s = 1) quantile function at probabilities p ≤ ½."""
    if prior == "gaussian":
        return ndtri(p)
    if prior == "laplace":
        return jnp.log(2.0 * p)
    return 2.0 * p - 1.0


def prior_quantiles(prior: str, scale: ArrayLike, n: int) -> jax.Array:
    """The prior's quantiles at (k − ½)/n, k = 1..n, ascending; shape (n,).

    n: a static Python int. scale: the prior's s (a scalar, may be traced). Computed on the
    lower half and mirrored (q_k = −q_{n+1−k}), so they are exactly symmetric and keep float32
    precision in the upper tail (1 − p is not representable near 1).
    """
    _check_prior(prior)
    n = int(n)
    if n < 1:
        raise ValueError(f"prior_quantiles needs n >= 1, got {n}")
    half = (n + 1) // 2  # the middle one (odd n) is the median, 0
    p = (jnp.arange(1, half + 1, dtype=jnp.float32) - 0.5) / n
    lower = _lower_quantiles(prior, p)
    if n % 2:
        lower = lower.at[-1].set(0.0)
        unit = jnp.concatenate([lower, -lower[-2::-1]])
    else:
        unit = jnp.concatenate([lower, -lower[::-1]])
    return jnp.asarray(scale, jnp.float32) * unit


def wasserstein2(latent: ArrayLike, prior: str, scale: ArrayLike) -> jax.Array:
    """Exact 1-D W2² between the entries of `latent` and the prior, normalized by σ².

    latent: Ŵ_ℓ, any shape (n entries). scale: the prior's s (σ = `prior_std(prior, s)`).
    Returns mean_k ((sort(Ŵ)_k − q_k) / σ)², q_k the prior quantiles at (k − ½)/n: zero
    exactly when the entries are the quantiles (in any order), on the unit-variance scale
    whatever the weight scale. The gradient is finite everywhere (sort is a permutation;
    tied or all-zero entries are fine).
    """
    flat = jnp.ravel(jnp.asarray(latent, jnp.float32))
    std = prior_std(prior, scale)
    unit_scale = jnp.float32(1.0 / _STD_PER_SCALE[prior])  # s of the unit-variance prior
    quantiles = prior_quantiles(prior, unit_scale, flat.size)
    return jnp.mean(jnp.square(jnp.sort(flat / std) - quantiles))


def wasserstein2_binned(
    latent: ArrayLike, prior: str, scale: ArrayLike, bins: int = 4096, sample: int = 1 << 17
) -> jax.Array:
    """W2² between the entries of `latent` and the prior, with ranks read from a histogram
    instead of a sort: the same value and gradient as `wasserstein2` up to the histogram's
    resolution, at a small part of its cost (docs/methods.md#binned-alignment).

    Exact W2² = mean_k (z_(k) − q_k)², whose gradient moves each entry z towards the prior's
    quantile at its own rank. Here each entry's rank is its bin's count of smaller entries plus
    its position inside the bin (linear), from a histogram of `bins` equal bins over
    [−max|z|, max|z|] (counted on at most `sample` evenly strided entries, scaled to n); its
    target q is the prior's quantile at that rank, computed on the smaller tail so both tails
    keep float32 precision, and held constant (`stop_gradient`). Returns mean((z − q)²) with
    z = Ŵ/σ. On 5 × 10⁶ Gaussian entries: value within 3e-5 relative of the sort's, gradient
    within 4e-4, 17x faster on CPU (value and gradient).
    """
    flat = jnp.ravel(jnp.asarray(latent, jnp.float32))
    n = flat.size
    z = flat / prior_std(prior, scale)
    unit = jnp.float32(1.0 / _STD_PER_SCALE[prior])
    fixed = jax.lax.stop_gradient(z)
    top = jnp.max(jnp.abs(fixed)) * (1.0 + 1e-6) + 1e-12

    def bucket(v: jax.Array) -> tuple[jax.Array, jax.Array]:
        u = (v + top) / (2.0 * top) * bins
        i = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, bins - 1)
        return i, jnp.clip(u - i, 0.0, 1.0)

    index, within = bucket(fixed)
    stride = max(1, n // int(sample))
    counted = fixed[::stride]
    counts = jnp.zeros(bins, jnp.float32).at[bucket(counted)[0]].add(1.0)
    counts = counts * jnp.float32(n / counted.size)
    below = jnp.cumsum(counts) - counts  # entries in lower bins
    above = jnp.maximum(n - below - counts, 0.0)  # entries in higher bins

    def quantile(lower_count: jax.Array, upper_count: jax.Array) -> jax.Array:
        # the prior's quantile at p = (lower + ½)/n, where 1 − p = (upper + ½)/n
        p_low, p_high = (lower_count + 0.5) / n, (upper_count + 0.5) / n
        low = _lower_quantiles(prior, jnp.clip(p_low, 0.0, 0.5))
        high = -_lower_quantiles(prior, jnp.clip(p_high, 0.0, 0.5))
        return unit * jnp.where(p_low <= p_high, low, high)

    spread = jnp.maximum(counts - 1.0, 0.0)
    first = quantile(below, jnp.maximum(n - below - 1.0, 0.0))  # smallest entry of each bin
    last = quantile(below + spread, above)  # largest entry of each bin
    target = first[index] + within * (last[index] - first[index])
    return jnp.mean(jnp.square(z - jax.lax.stop_gradient(target)))


def _soft_histogram(z: jax.Array, edges: jax.Array, bandwidth: float) -> jax.Array:
    """Mean Gaussian-kernel bin masses of the points z: (len(edges) + 1,), summing to 1.

    Bin j of point x gets Φ((e_{j+1} − x)/h) − Φ((e_j − x)/h), plus two tail bins
    (−∞, e_0] and [e_B, ∞), so no mass is lost.
    """
    cdf = jnp.mean(ndtr((edges[None, :] - z[:, None]) / bandwidth), axis=0)
    return jnp.concatenate([cdf[:1], jnp.diff(cdf), 1.0 - cdf[-1:]])


def kl_histogram(
    latent: ArrayLike,
    prior: str,
    scale: ArrayLike,
    bins: int = 64,
    bandwidth: float | None = None,
) -> jax.Array:
    """KL(P‖Q) between a differentiable histogram P of Ŵ's entries and the prior's masses Q.

    latent: Ŵ_ℓ, any shape; scale: the prior's s. Entries are standardized by the prior's σ;
    `bins` equal bins cover [−4σ, 4σ], plus two tail bins. P: each entry spreads over the
    bins with a Gaussian kernel of width `bandwidth` (in units of σ; default one bin width,
    8/bins). Q: the prior's bin masses smoothed by the same kernel (a quadrature over 4096
    prior quantiles), so the smoothing itself costs nothing: KL ≈ 0 when the entries follow
    the prior. Masses are floored at 1e-7 (and renormalized) so log and gradients stay finite.
    Memory is n × (bins + 1) floats.
    """
    _check_prior(prior)
    bins = int(bins)
    if bins < 2:
        raise ConfigError(f"pmp.bins must be >= 2, got {bins}")
    h = 8.0 / bins if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ConfigError(f"pmp.bandwidth must be > 0, got {bandwidth}")
    z = jnp.ravel(jnp.asarray(latent, jnp.float32)) / prior_std(prior, scale)
    edges = jnp.linspace(-4.0, 4.0, bins + 1, dtype=jnp.float32)
    unit_scale = jnp.float32(1.0 / _STD_PER_SCALE[prior])
    reference = prior_quantiles(prior, unit_scale, _KL_PRIOR_POINTS)

    def floored(masses: jax.Array) -> jax.Array:
        masses = jnp.maximum(masses, 0.0) + _KL_FLOOR  # Φ differences may round below 0
        return masses / jnp.sum(masses)

    p = floored(_soft_histogram(z, edges, h))
    q = floored(_soft_histogram(reference, edges, h))
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)))


def _build(
    name: str,
    prior: str,
    alignment: str,
    mu: float,
    kappa_start: float,
    kappa_end: float,
    warmup: float,
    bins: int,
    bandwidth: float | None,
    mu_end: float | None = None,
    redraw: bool = False,
    scope: str = "tensor",
    select: Select | None = None,
    control: bool = False,
    control_speed: float = 10.0,
) -> PruningMethod:
    _check_prior(prior)
    if not control_speed > 0:
        raise ConfigError(f"{name}.control_speed must be > 0, got {control_speed}")
    if scope not in PRIOR_SCOPES:
        raise ConfigError(f"{name}.scope must be one of {PRIOR_SCOPES}, got {scope!r}")
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"{name}.alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if not mu >= 0:
        raise ConfigError(f"{name}.mu must be >= 0, got {mu}")
    if mu_end is not None and not (mu_end > 0 and mu > 0):
        raise ConfigError(
            f"{name}.mu_end needs mu > 0 and mu_end > 0 (a geometric ramp), got mu {mu} and "
            f"mu_end {mu_end}"
        )
    if not 0 < kappa_end <= kappa_start:
        raise ConfigError(
            f"{name} needs 0 < kappa_end <= kappa_start, got {kappa_end} and {kappa_start}"
        )
    if not 0 <= warmup <= 1:
        raise ConfigError(f"{name}.warmup must be in [0, 1], got {warmup}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"{name}.bins must be an integer >= 2, got {bins}")
    if bandwidth is not None and not bandwidth > 0:
        raise ConfigError(f"{name}.bandwidth must be > 0, got {bandwidth}")

    def init_scales(latent: Params) -> dict[str, jax.Array]:
        leaves = prunable_leaves(latent, select)
        if scope == "global":  # one prior over every prunable entry: the pooled init rms
            pooled = sum(jnp.sum(jnp.square(w)) for w in leaves.values())
            n = sum(w.size for w in leaves.values())
            s = prior_scale(prior, jnp.sqrt(pooled / max(n, 1)))
            return {path: s for path in leaves}
        return {
            path: prior_scale(prior, jnp.sqrt(jnp.mean(jnp.square(w))))
            for path, w in leaves.items()
        }

    def init(latent: Params, key: jax.Array) -> Any:
        del key  # deterministic: the priors' scales come from the initial weights
        scales = init_scales(latent)
        return (scales, {"shift": jnp.zeros((), jnp.float32)}) if control else scales

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        kappa = held_anneal(ctx.step, ctx.total_steps, kappa_start, kappa_end, warmup)
        # With a warmup the threshold's rate ramps in from 0 (gradual pruning), as CTF's
        # budget target does; at the end of training it is exactly ctx.target_rate.
        rate = ramp_rate(ctx.target_rate, ctx.step, ctx.total_steps, warmup)
        scales, factor = thresholds_of(aux, control, control_speed)
        masks = {}
        for path, w in prunable_leaves(latent, select).items():
            a = threshold(prior, scales[path], rate) * factor
            masks[path] = band_stop(w, a, kappa * a)
        return masks

    def divergence(w: jax.Array, scale: jax.Array) -> jax.Array:
        if alignment == "wasserstein":
            return wasserstein2(w, prior, scale)
        if alignment == "wasserstein_binned":
            return wasserstein2_binned(w, prior, scale)
        return kl_histogram(w, prior, scale, bins=bins, bandwidth=bandwidth)

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks):
        # alignment only: no budget term (docs/methods.md#pmp); with the controller, its
        # zero-valued term that moves the common threshold factor (docs/methods.md, "budget
        # controller")
        control_term = jnp.float32(0.0)
        if control:
            control_term = budget_control_term(
                aux[1]["shift"], masks, ctx.target_rate, ctx.step, ctx.total_steps, warmup
            )
            aux = aux[0]
        return control_term + alignment_penalty(latent, aux, ctx)

    def alignment_penalty(latent: Params, aux: dict[str, jax.Array], ctx: MaskContext):
        leaves = prunable_leaves(latent, select)
        if scope == "global" and leaves:
            # one distribution over all entries; x the tensor count, so μ weighs it as the
            # per-tensor sum of the "tensor" scope
            flat = jnp.concatenate([jnp.ravel(w) for w in leaves.values()])
            scale = aux[next(iter(leaves))]
            return (
                alignment_weight(mu, mu_end, ctx.step, ctx.total_steps)
                * len(leaves)
                * divergence(flat, scale)
            )
        terms = [divergence(w, aux[path]) for path, w in leaves.items()]
        if not terms:
            return jnp.float32(0.0)
        return alignment_weight(mu, mu_end, ctx.step, ctx.total_steps) * sum(terms[1:], terms[0])

    def prepare(latent: Params, key: jax.Array) -> Params:
        """Redraw every prunable tensor from the prior with its init variance, so that
        a(r) prunes a fraction r from the first step. (The Glorot-uniform init never exceeds
        √3 σ, while the Gaussian a(0.95) = 1.96 σ: started from it, PMP at r ≥ 0.92 begins with
        every weight in the stop band and no gradient to leave it.) Off by default: on SBU
        fold 1 at r = 0.98 it gave 14.5% against 58% without (one run each)."""
        leaves = prunable_leaves(latent, select)
        keys = dict(zip(leaves, jax.random.split(key, max(len(leaves), 1)), strict=False))
        scales = init_scales(latent)
        draws = {}
        for path, w in leaves.items():
            s = scales[path]
            if prior == "gaussian":
                z = jax.random.normal(keys[path], w.shape, w.dtype)
            elif prior == "laplace":
                z = jax.random.laplace(keys[path], w.shape, w.dtype)
            else:
                z = jax.random.uniform(keys[path], w.shape, w.dtype, -1.0, 1.0)
            draws[path] = s * z

        def redraw(path, leaf):
            return draws.get(path_name(path), leaf)

        return jax.tree_util.tree_map_with_path(redraw, latent)

    return PruningMethod(
        name,
        init,
        mask,
        penalty,
        prepare=prepare if redraw else None,
        trainable_aux=control,
        select=select,
    )


def alignment_weight(
    mu: float, mu_end: float | None, step: ArrayLike, total_steps: ArrayLike
) -> jax.Array:
    """μ_t, the alignment loss's weight at `step`: constant μ (docs/methods.md#pmp) when mu_end is
    None, else geometric from μ at step 0 to mu_end at the last step (`shared.anneal`).

    Why a ramp: with a constant μ = 1 the cross-entropy keeps the large tensors' entries
    wider than the prior (FPHA fc0 at r = 0.95: std 1.17 σ, W2² = 0.067), so fewer than r of
    them fall below a(r) and PMP's soft rate ended 1-3 points short of the target at
    0.95-0.99, with the exact export then cutting kept weights (FPHA 0.95: 81% soft-masked,
    70% exported). A weight that grows over training leaves the cross-entropy in charge
    early and aligns the distribution, hence the rate, by the end.
    """
    if mu_end is None:
        return jnp.float32(mu)
    return anneal(step, total_steps, mu, mu_end)


def pmp(
    prior: str = "gaussian",
    alignment: str = "wasserstein_binned",
    mu: float = 1.0,
    kappa_start: float = 0.2,
    kappa_end: float = 0.005,
    warmup: float = 0.0,
    bins: int = 64,
    bandwidth: float | None = None,
    mu_end: float | None = 100.0,
    scope: str = "global",
    select: Select | None = None,
    control: bool = False,
    control_speed: float = 10.0,
) -> PruningMethod:
    """The PMP method of docs/methods.md#pmp.

    prior: "gaussian", "laplace" or "uniform", scaled per tensor to the init variance.
    alignment: "wasserstein" (exact 1-D W2², `wasserstein2`), "wasserstein_binned" (the same
      with ranks from a histogram, `wasserstein2_binned`) or "kl" (`kl_histogram`).
    mu: weight μ of the alignment loss μ Σ_ℓ D(Ŵ_ℓ, Q_ℓ); D is on the unit-variance scale.
    mu_end: None (constant μ, as reconstructed) or the weight at the end of training, reached by a
      geometric ramp from mu (`alignment_weight`); default 100 (docs/methods.md, PMP).
    kappa_start, kappa_end: κ_0 and κ_min of the relative temperature τ = κ_t a_ℓ(r).
    warmup: κ is held at kappa_start over this fraction of the steps, then annealed
      (`shared.held_anneal`; 0 = anneal over all steps), and the threshold's rate ramps in
      from 0 over the same fraction (`shared.ramp_rate`). Default 0: SBU fold 1 at r = 0.98
      gave 58% without and 25% with warmup 0.5.
    bins, bandwidth: the histogram of alignment "kl" (ignored by "wasserstein").
    scope: "tensor" (one prior per tensor: every tensor pruned at rate r) or "global" (one
      prior over all prunable entries, scaled by their pooled init rms, aligned as one
      distribution: one threshold a(r) for the network, which allocates the rate across
      tensors by magnitude; docs/methods.md, "PMP allocation").
    select: which leaves are pruned (`api.prunable_leaves`); None = the GCN's rule.
    control, control_speed: the budget controller (`shared.budget_control_term`, as in CTF):
      every threshold a(r) is multiplied by a common factor exp(speed · θ), θ trained so that
      the soft masks keep exactly the target count; aux is then (scales, {"shift": θ}).

    aux = {path: s_ℓ, the prior's scale parameter}; masks = {path: band_stop(Ŵ_ℓ, a_ℓ(r),
    κ_t a_ℓ(r))} with r = ctx.target_rate (may be traced or vmapped).
    """
    return _build(
        "pmp",
        prior,
        alignment,
        mu,
        kappa_start,
        kappa_end,
        warmup,
        bins,
        bandwidth,
        mu_end,
        scope=scope,
        select=select,
        control=control,
        control_speed=control_speed,
    )


def mrmp(
    rates: Sequence[float] = DEFAULT_RATES,
    prior: str = "gaussian",
    alignment: str = "wasserstein_binned",
    mu: float = 1.0,
    kappa_start: float = 0.2,
    kappa_end: float = 0.005,
    warmup: float = 0.0,
    bins: int = 64,
    bandwidth: float | None = None,
    mu_end: float | None = None,
    scope: str = "global",
    select: Select | None = None,
) -> PruningMethod:
    """The MRMP method of docs/methods.md#mrmp: PMP on one latent pytree trained for many rates.

    rates: the training rates R, distinct values in (0, 1). They are validated here, but a
    `PruningMethod` has no field for them: the multi-rate objective takes R from the
    configuration and calls `mrmp_masks(latent, aux, R, ctx, method)`.
    The other arguments are PMP's (`pmp`). `mask` thresholds at ctx.target_rate, so the
    trained network is evaluated (and exported) at any single rate, seen in R or not.
    """
    check_rates(rates, "mrmp.rates")
    return _build(
        "mrmp",
        prior,
        alignment,
        mu,
        kappa_start,
        kappa_end,
        warmup,
        bins,
        bandwidth,
        mu_end,
        scope=scope,
        select=select,
    )


def check_rates(rates: Sequence[float], option: str = "mrmp.rates") -> tuple[float, ...]:
    """Validate a set of training rates: non-empty, distinct, each in (0, 1)."""
    try:
        values = tuple(float(r) for r in rates)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{option} must be a sequence of numbers, got {rates!r}") from err
    if not values or len(set(values)) != len(values) or not all(0 < r < 1 for r in values):
        raise ConfigError(f"{option} must be distinct rates in (0, 1), got {list(values)}")
    return values


def mrmp_masks(
    latent: Params,
    aux: Any,
    rates: ArrayLike,
    ctx: MaskContext,
    method: PruningMethod | None = None,
) -> Masks:
    """Masks at every rate of `rates` at once: {path: ψ_ℓ stacked, shape (len(rates), *Ŵ_ℓ)}.

    jax.vmap of `method.mask` over ctx.target_rate (the other fields of ctx are shared).
    method: any method whose mask depends on ctx.target_rate (default `mrmp()`, i.e. PMP's
    defaults); aux must be its `init`. rates: (R,) floats, may be traced. jit-able.
    """
    method = mrmp() if method is None else method
    rates = jnp.atleast_1d(jnp.asarray(rates, jnp.float32))
    if rates.ndim != 1:
        raise ValueError(f"rates must be a vector, got shape {rates.shape}")
    return jax.vmap(lambda r: method.mask(latent, aux, ctx._replace(target_rate=r)))(rates)


register("pmp", pmp)
register("mrmp", mrmp)
