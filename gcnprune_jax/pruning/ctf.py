"""CTF: coarse-to-fine Hadamard parametrization of the mask (docs/methods.md#ctf).

ψ(Ŵ) = b(chan) ⊙ b(col) ⊙ b(row) ⊙ b(Ŵ), b = b_{a_ℓ, κ_t a_ℓ} entry-wise, with the group
statistics of docs/methods.md#prunable-tensors broadcast to (G, I, O). A zero in a coarse factor
removes the whole channel / column / row; where the coarse factors are 1 the entry factor decides.
Loss: CE(W) + L_budget. Granularities can be switched off for the ablations ("entry" only, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

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
    as_gio,
    band_stop,
    budget_penalty,
    check_budget_options,
    from_gio,
    group_rms,
    held_anneal,
    threshold_state,
    thresholds_of,
)


def ctf(
    granularities: Sequence[str] = ("channel", "column", "row", "entry"),
    alpha: float = 0.5,
    kappa_start: float = 0.2,
    kappa_end: float = 0.005,
    lam: float = 1e3,
    warmup: float = 0.5,
    hold: bool = True,
    zero_floor: bool = True,
    control: bool = False,
    control_speed: float = 10.0,
    select: Select | None = None,
) -> PruningMethod:
    """The CTF method of docs/methods.md#ctf.

    granularities: the enabled factors, a non-empty subset of "channel", "column", "row",
      "entry" (docs/methods.md#ctf ablations).
    alpha: threshold scale, a_ℓ = α · rms(Ŵ_ℓ at init) (docs/methods.md#thresholds-and-temperature).
    kappa_start, kappa_end: κ_0 and κ_min of the annealed relative temperature τ = κ_t a_ℓ.
    lam: λ of the budget loss (docs/methods.md#budget-loss).
    warmup: the budget's target rate ramps from 0 to r over this fraction of the steps
      (`shared.ramp_rate`; 0 = the reconstructed papers' constant target).
    hold: keep κ at kappa_start during the warmup and anneal it over the remaining steps, so
      the masks harden only once the budget has its final target.
    zero_floor: rescale the band-stop so it is exactly 0 at Ŵ = 0 at every temperature
      (`shared.band_stop`); without it the budget is out of reach while κ is high.
    control: the budget controller (`shared.budget_control_term`): every threshold is
      a_ℓ · exp(control_speed · θ), θ a trained scalar driven to meet the budget exactly.
      aux is then (thresholds, {"shift": θ}) with θ trained (`trainable_aux`).
    select: which leaves are pruned (`api.prunable_leaves`); None = the GCN's rule
      (`models.gcn.is_prunable`), e.g. `lambda path, leaf: leaf.ndim >= 2` for another model.

    aux = {path: a_ℓ (scalar)}; masks = {path: ψ_ℓ of Ŵ_ℓ's shape, (G, I, O) or (I, O)}.
    """
    granularities = tuple(granularities)
    unknown = [g for g in granularities if g not in GRANULARITIES]
    if unknown or not granularities or len(set(granularities)) != len(granularities):
        raise ConfigError(
            f"ctf.granularities must be distinct values among {GRANULARITIES}, "
            f"got {list(granularities)}"
        )
    check_budget_options("ctf", alpha, kappa_start, kappa_end, lam, warmup)

    def init(latent: Params, key: jax.Array) -> Any:
        # Deterministic: thresholds come from the initial weights
        # (docs/methods.md#thresholds-and-temperature).
        del key
        return threshold_state(prunable_leaves(latent, select), alpha, control)

    def mask(latent: Params, aux: Any, ctx: MaskContext) -> Masks:
        aux, scale = thresholds_of(aux, control, control_speed)
        kappa = held_anneal(
            ctx.step, ctx.total_steps, kappa_start, kappa_end, warmup if hold else 0.0
        )
        masks = {}
        for name, w in prunable_leaves(latent, select).items():
            w_gio = as_gio(w)  # (G, I, O)
            threshold = aux[name] * scale
            # docs/methods.md#ctf: Hadamard product of the enabled factors, one band-stop each.
            factors = [
                band_stop(group_rms(w_gio, kind), threshold, kappa * threshold, zero_floor)
                for kind in granularities
            ]
            psi = factors[0]
            for factor in factors[1:]:
                psi = psi * factor
            masks[name] = from_gio(psi, jnp.shape(w))
        return masks

    def penalty(latent: Params, aux: Any, ctx: MaskContext, masks: Masks) -> jax.Array:
        del latent
        return budget_penalty(masks, ctx, warmup, lam, aux[1]["shift"] if control else None)

    return PruningMethod("ctf", init, mask, penalty, trainable_aux=control, select=select)


register("ctf", ctf)
