"""Contracts of the shared pruning math (SPEC §0): gcnprune_jax.pruning.shared."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning.shared import (
    GRANULARITIES,
    anneal,
    as_gio,
    band_stop,
    budget_loss,
    exact_export,
    from_gio,
    group_rms,
    init_threshold,
    keep_count,
    realized_rate,
)

# --- (G, I, O) view -------------------------------------------------------------------------


def test_gio_view_round_trips_2d_and_passes_3d_through():
    kernel = jnp.arange(6.0).reshape(2, 3)
    assert as_gio(kernel).shape == (1, 2, 3)
    np.testing.assert_array_equal(from_gio(as_gio(kernel), kernel.shape), kernel)
    block = jnp.arange(24.0).reshape(2, 3, 4)
    assert as_gio(block) is block
    np.testing.assert_array_equal(from_gio(block, block.shape), block)


def test_gio_view_rejects_other_ranks_and_shapes():
    with pytest.raises(ValueError, match="shape"):
        as_gio(jnp.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        from_gio(jnp.zeros((2, 3, 4)), (6, 4))


# --- band-stop ------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1e-4, 0.05, 3.0])
@pytest.mark.parametrize("kappa", [100.0, 0.5, 0.005, 1e-6])
def test_band_stop_values_in_unit_interval(threshold, kappa):
    x = jnp.asarray(np.random.default_rng(0).normal(0, 3 * threshold, 20_000), jnp.float32)
    x = jnp.concatenate([x, jnp.asarray([0.0, threshold, -threshold, 1e30, -1e30])])
    b = band_stop(x, threshold, kappa * threshold)
    assert bool(jnp.all(b >= 0.0)) and bool(jnp.all(b <= 1.0))


def test_band_stop_stops_inside_and_passes_outside():
    a, tau = 0.2, 0.005 * 0.2
    inside = jnp.asarray([0.0, 0.05, -0.1, 0.18, -0.18])
    outside = jnp.asarray([0.22, -0.22, 0.5, -3.0])
    assert float(jnp.max(band_stop(inside, a, tau))) < 1e-6
    assert float(jnp.min(band_stop(outside, a, tau))) > 1 - 1e-6
    # On the edge the mask is half open, whatever the temperature.
    np.testing.assert_allclose(band_stop(jnp.asarray([a, -a]), a, tau), 0.5, atol=1e-6)


@pytest.mark.parametrize("tau", [1e-4, 1e-6, 1e-9])
def test_band_stop_tends_to_hard_mask(tau):
    a = 0.3
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, 5_000), jnp.float32)
    x = x[jnp.abs(jnp.abs(x) - a) > 1e-2]  # away from the edge
    hard = (jnp.abs(x) > a).astype(jnp.float32)
    np.testing.assert_array_equal(band_stop(x, a, tau), hard)


@pytest.mark.parametrize("tau", [0.1, 1e-6])
def test_band_stop_gradients_finite_including_edge(tau):
    a = 0.5
    x = jnp.asarray([-2.0, -a, -0.3, 0.0, 0.3, a, 2.0])
    grad_x = jax.grad(lambda v: band_stop(v, a, tau).sum())(x)
    grad_a = jax.grad(lambda t: band_stop(x, t, tau).sum())(a)
    assert bool(jnp.all(jnp.isfinite(grad_x))) and bool(jnp.isfinite(grad_a))
    # On the edge the slope is 1/(4τ), pointing outwards (the other logistic is negligible).
    np.testing.assert_allclose(grad_x[5], 1 / (4 * tau), rtol=1e-3)
    np.testing.assert_allclose(grad_x[1], -1 / (4 * tau), rtol=1e-3)


# --- group statistics ------------------------------------------------------------------------

# G = 2 channels of 2 x 2; channel 1 has an all-zero row.
W_HAND = jnp.asarray([[[1.0, -1.0], [2.0, 2.0]], [[0.0, 0.0], [3.0, 4.0]]])
R = math.sqrt
EXPECTED_GROUPS = {
    "entry": W_HAND,
    "row": [[[1, 1], [2, 2]], [[0, 0], [R(12.5), R(12.5)]]],
    "column": [[[R(2.5), R(2.5)], [R(2.5), R(2.5)]], [[R(4.5), R(8)], [R(4.5), R(8)]]],
    "channel": [[[R(2.5)] * 2] * 2, [[2.5] * 2] * 2],
}


@pytest.mark.parametrize("kind", GRANULARITIES)
def test_group_rms_hand_computed(kind):
    np.testing.assert_allclose(group_rms(W_HAND, kind), EXPECTED_GROUPS[kind], rtol=1e-6)


@pytest.mark.parametrize("kind", GRANULARITIES)
def test_group_rms_broadcasts_to_gio(kind):
    w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 5)), jnp.float32)
    assert group_rms(w, kind).shape == (3, 4, 5)


def test_group_rms_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        group_rms(W_HAND, "block")
    with pytest.raises(ValueError, match="G, I, O"):
        group_rms(W_HAND[0], "row")


@pytest.mark.parametrize("kind", ["row", "column", "channel"])
def test_group_rms_gradient_finite_on_zero_groups(kind):
    w = W_HAND.at[0, :, 1].set(0.0)  # also a zero column in channel 0
    grads = jax.grad(lambda v: band_stop(group_rms(v, kind), 0.5, 1e-3).sum())(w)
    assert bool(jnp.all(jnp.isfinite(grads)))
    zeros = jax.grad(lambda v: group_rms(v, kind).sum())(jnp.zeros((2, 2, 2)))
    np.testing.assert_array_equal(zeros, 0.0)


def test_group_rms_gradient_matches_analytic():
    # Σ over the broadcast row statistic is O · rms_row, whose gradient is W / rms_row
    # (and 0 on the zero row).
    grads = jax.grad(lambda v: group_rms(v, "row").sum())(W_HAND)
    rows = np.asarray(EXPECTED_GROUPS["row"])
    expected = np.where(rows > 0, np.asarray(W_HAND) / np.where(rows > 0, rows, 1), 0)
    np.testing.assert_allclose(grads, expected, rtol=1e-6)


def test_init_threshold_is_alpha_times_rms():
    np.testing.assert_allclose(init_threshold(jnp.asarray([3.0, -4.0])), 0.5 * R(12.5))
    np.testing.assert_allclose(init_threshold(W_HAND, alpha=2.0), 2 * R(35 / 8), rtol=1e-6)


# --- temperature annealing -------------------------------------------------------------------


def test_anneal_endpoints_and_clipping():
    total = 1000
    assert float(anneal(0, total)) == 0.5
    np.testing.assert_allclose(anneal(total - 1, total), 0.005, rtol=1e-6)
    np.testing.assert_allclose(anneal(5 * total, total), 0.005, rtol=1e-6)
    assert float(anneal(-3, total)) == 0.5
    assert float(anneal(0, 1)) == 0.5
    np.testing.assert_allclose(anneal(2, 5, start=2.0, end=0.02), 0.2, rtol=1e-6)  # geometric


def test_anneal_is_monotone_decreasing():
    kappa = np.asarray(jax.vmap(lambda t: anneal(t, 500))(jnp.arange(600)))
    assert np.all(np.diff(kappa[:500]) < 0)
    assert np.all(kappa[499:] == kappa[499])
    np.testing.assert_allclose(kappa[1:500] / kappa[:499], (0.01) ** (1 / 499), rtol=1e-4)


# --- budget loss -----------------------------------------------------------------------------


def _masks(total_a: float, total_b: float) -> dict:
    # Exact binary fractions, so that "exactly at the target" is exact in float32.
    b = jnp.concatenate([jnp.full((40,), total_b / 40), jnp.zeros((50,))])
    return {"a": jnp.full((2, 5), total_a / 10), "b": [b]}


def test_budget_loss_zero_at_target_and_positive_otherwise():
    assert float(budget_loss(_masks(5.0, 20.0), 0.75, 100)) == 0.0
    np.testing.assert_allclose(budget_loss(_masks(10.0, 20.0), 0.75, 100), 1e4 * 0.05**2)
    np.testing.assert_allclose(budget_loss(_masks(0.0, 20.0), 0.75, 100, lam=2.0), 2 * 0.05**2)


def test_budget_loss_gradient_pushes_towards_target():
    over = jax.grad(lambda m: budget_loss(m, 0.75, 100))(_masks(10.0, 20.0))
    under = jax.grad(lambda m: budget_loss(m, 0.75, 100))(_masks(0.0, 20.0))
    assert all(bool(jnp.all(g > 0)) for g in jax.tree.leaves(over))
    assert all(bool(jnp.all(g < 0)) for g in jax.tree.leaves(under))


# --- keep count ------------------------------------------------------------------------------


def test_keep_count_edge_cases():
    assert keep_count(1234, 0.0) == 1234
    assert keep_count(1234, 1.0) == 0
    assert keep_count(1234, 1 - 1e-12) == 0
    assert keep_count(0, 0.5) == 0
    assert keep_count(1, 0.5) == 1  # half rounds up
    assert keep_count(1, 0.51) == 0
    assert keep_count(7, 0.937) == 0
    assert keep_count(1000, 0.937) == 63
    assert keep_count(np.int64(250), np.float64(0.066)) == 234  # float64 would give 233
    for bad in (-0.1, 1.2, float("nan")):
        with pytest.raises(ConfigError, match="rate"):
            keep_count(10, bad)


def test_keep_count_is_exact_half_up_on_three_digit_rates():
    for n_total in (1, 2, 7, 125, 250, 1075):
        for k in range(1001):
            expected = ((1000 - k) * n_total + 500) // 1000
            assert keep_count(n_total, k / 1000) == expected, (n_total, k)


# --- exact export ----------------------------------------------------------------------------


def _random_network(seed: int) -> tuple[dict, dict]:
    """Random prunable tensors of mixed ranks, tiny ones included, with many tied ψ."""
    rng = np.random.default_rng(seed)
    shapes = [(1,), (2,), (7,), (3, 4), (2, 3, 5), (1, 1)]
    picked = rng.choice(len(shapes), size=rng.integers(1, 4), replace=False)
    latents, soft = {}, {}
    for j in picked:
        name = f"layer{rng.integers(100)}/{j}"
        latents[name] = rng.normal(size=shapes[j]).round(1)  # rounding makes |Ŵ| ties too
        if rng.random() < 0.5:
            soft[name] = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=shapes[j])
        else:
            soft[name] = 1 / (1 + np.exp(-rng.normal(0, 3, size=shapes[j])))
    return soft, latents


def _rank_keys(soft: dict, latents: dict) -> list[tuple[float, float, int]]:
    """(ψ, |Ŵ|, −global index) per entry, in the global order: larger key = kept first."""
    keys, index = [], 0
    for name in sorted(soft):
        for p, w in zip(np.ravel(soft[name]), np.ravel(latents[name]), strict=True):
            keys.append((float(p), abs(float(w)), -index))
            index += 1
    return keys


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.937, 0.99, "random"])
def test_exact_export_hits_count_and_keeps_top_ranked(seed, rate):
    soft, latents = _random_network(seed)
    if rate == "random":
        rate = float(np.random.default_rng(seed + 100).random())
    result = exact_export(soft, latents, rate)
    total = sum(np.size(v) for v in soft.values())
    assert result.total == total
    assert result.kept == keep_count(total, rate)
    assert sum(int(m.sum()) for m in result.masks.values()) == result.kept
    assert all(result.masks[k].dtype == bool for k in soft)
    assert all(result.masks[k].shape == np.shape(soft[k]) for k in soft)
    assert result.realized_rate == realized_rate(result.masks) == 1 - result.kept / total
    # Every kept entry outranks every pruned one: ψ first, then |Ŵ|, then global index.
    keys = _rank_keys(soft, latents)
    kept = np.concatenate([result.masks[k].ravel() for k in sorted(soft)])
    if 0 < result.kept < total:
        assert min(k for k, m in zip(keys, kept, strict=True) if m) > max(
            k for k, m in zip(keys, kept, strict=True) if not m
        )


def test_exact_export_breaks_full_ties_by_name_then_index():
    soft = {"b": np.ones(3), "a": np.ones(2)}
    latents = {"b": np.ones(3), "a": np.ones(2)}
    result = exact_export(soft, latents, 0.4)  # keep 3 of 5
    np.testing.assert_array_equal(result.masks["a"], [True, True])
    np.testing.assert_array_equal(result.masks["b"], [True, False, False])
    # Equal ψ: larger |Ŵ| wins before the index does.
    latents["b"] = np.asarray([0.1, -5.0, 3.0])
    result = exact_export(soft, latents, 0.6)  # keep 2 of 5
    np.testing.assert_array_equal(result.masks["a"], [False, False])
    np.testing.assert_array_equal(result.masks["b"], [False, True, True])


def test_exact_export_reports_rounding_changes():
    latents = {"w": np.ones(5)}
    over = exact_export({"w": np.asarray([0.9, 0.8, 0.6, 0.4, 0.1])}, latents, 0.6)
    np.testing.assert_array_equal(over.masks["w"], [True, True, False, False, False])
    assert (over.kept, over.rounding_changed) == (2, 1)
    np.testing.assert_allclose(over.soft_rate, 1 - 2.8 / 5)
    under = exact_export({"w": np.asarray([0.9, 0.1, 0.4, 0.2, 0.3])}, latents, 0.4)
    np.testing.assert_array_equal(under.masks["w"], [True, False, True, False, True])
    assert under.rounding_changed == 2
    met = exact_export({"w": np.asarray([0.9, 0.1, 0.7, 0.5, 0.3])}, latents, 0.6)
    np.testing.assert_array_equal(met.masks["w"], [True, False, True, False, False])
    assert met.rounding_changed == 0


def test_exact_export_is_deterministic():
    soft, latents = _random_network(3)
    first = exact_export(soft, latents, 0.937)
    reordered = exact_export(dict(reversed(soft.items())), latents, 0.937)
    for name in soft:
        np.testing.assert_array_equal(first.masks[name], reordered.masks[name])
    assert first._replace(masks=None) == reordered._replace(masks=None)


def test_exact_export_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="different tensors"):
        exact_export({"a": np.ones(2)}, {"b": np.ones(2)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        exact_export({"a": np.ones(2)}, {"a": np.ones(3)}, 0.5)
    with pytest.raises(ValueError, match="finite"):
        exact_export({"a": np.asarray([np.nan, 1.0])}, {"a": np.ones(2)}, 0.5)


def test_realized_rate_counts_over_all_tensors():
    masks = {"a": np.asarray([True, False, False]), "b": np.zeros((2, 2), bool)}
    assert realized_rate(masks) == 1 - 1 / 7
    assert realized_rate({"a": np.ones(4, bool)}) == 0.0


# --- jit --------------------------------------------------------------------------------------


def test_jit_matches_eager():
    w = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 4)), jnp.float32)
    a = init_threshold(w)
    np.testing.assert_allclose(jax.jit(init_threshold)(w), a, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(band_stop)(w, a, 0.1 * a), band_stop(w, a, 0.1 * a), rtol=1e-6
    )
    rms = jax.jit(group_rms, static_argnames="kind")
    for kind in GRANULARITIES:
        np.testing.assert_allclose(rms(w, kind=kind), group_rms(w, kind), rtol=1e-6)
    steps = jnp.arange(0, 120, 7)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(anneal, (0, None)))(steps, 100), [anneal(s, 100) for s in steps]
    )
    masks = {"a": jax.nn.sigmoid(w), "b": [jnp.ones(5)]}
    np.testing.assert_allclose(
        jax.jit(budget_loss)(masks, 0.9, 29), budget_loss(masks, 0.9, 29), rtol=1e-6
    )


def test_budget_ramp_is_cubic_from_zero_to_the_target():
    from gcnprune_jax.pruning.shared import ramp_rate

    values = [float(ramp_rate(0.98, s, 100, 0.5)) for s in range(0, 101, 5)]
    assert (
        values[0] == 0.0 and values[10] == pytest.approx(0.98) and values[-1] == pytest.approx(0.98)
    )
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert float(ramp_rate(0.98, 25, 100, 0.5)) == pytest.approx(0.98 * (1 - 0.5**3))
    assert float(ramp_rate(0.9, 0, 100, 0.0)) == pytest.approx(0.9)  # warmup 0: the SPEC
