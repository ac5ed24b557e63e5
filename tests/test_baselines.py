"""Baselines of SPEC §6: exact-count selections, their structure, and the fixed-mask method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning.api import MaskContext, to_objective
from gcnprune_jax.pruning.baselines import (
    fixed,
    magnitude_masks,
    random_masks,
    snip_masks,
    structured_masks,
)
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.train import Context

RATES = (0.0, 0.5, 0.9, 0.937, 0.99, 0.999)


def latents(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "block0/conv": rng.normal(size=(3, 5, 4)),
        "block0/query": rng.normal(size=(3, 5, 2)) * 0.3,
        "fc0/kernel": rng.normal(size=(7, 6)) * 2.0,
        "classifier/kernel": rng.normal(size=(6, 3)),
    }


def kept(masks) -> int:
    return int(sum(m.sum() for m in masks.values()))


def n_total(ws) -> int:
    return sum(w.size for w in ws.values())


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_magnitude_keeps_exactly_c_largest(rate, scope):
    ws = latents()
    masks = magnitude_masks(ws, rate, scope)
    assert kept(masks) == keep_count(n_total(ws), rate)
    for name, m in masks.items():
        assert m.shape == ws[name].shape and m.dtype == bool
    if scope == "global" and 0 < kept(masks) < n_total(ws):
        smallest_kept = min(np.abs(ws[n][m]).min() for n, m in masks.items() if m.any())
        largest_pruned = max(np.abs(ws[n][~m]).max() for n, m in masks.items() if (~m).any())
        assert smallest_kept >= largest_pruned


def test_layerwise_magnitude_prunes_each_tensor_at_the_rate():
    ws = latents()
    masks = magnitude_masks(ws, 0.75, "layerwise")
    for name, m in masks.items():
        assert abs(m.sum() - 0.25 * m.size) < 1.0, name
        # within a tensor, the kept entries are its largest
        if m.any() and (~m).any():
            assert np.abs(ws[name][m]).min() >= np.abs(ws[name][~m]).max()


def test_global_magnitude_favours_the_large_scale_tensor():
    masks = magnitude_masks(latents(), 0.8, "global")
    frac = {n: m.mean() for n, m in masks.items()}
    assert frac["fc0/kernel"] > frac["block0/query"]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("structure", ["column", "row", "channel"])
def test_structured_is_exact_and_pure_except_one_group(rate, structure):
    ws = latents(1)
    masks = structured_masks(ws, rate, structure)
    assert kept(masks) == keep_count(n_total(ws), rate)
    axes = {"row": (2,), "column": (1,), "channel": (1, 2)}[structure]
    impure = 0
    for m in masks.values():
        m3 = m if m.ndim == 3 else m[None]
        frac = m3.mean(axis=axes)
        impure += int(np.sum((frac > 0) & (frac < 1)))
    assert impure <= 1


def test_structured_keeps_the_groups_with_largest_rms():
    w = {"fc0/kernel": np.array([[1.0, 5.0, 0.1], [1.0, 5.0, 0.1]])}
    masks = structured_masks(w, 1 - 2 / 6, "column")
    np.testing.assert_array_equal(masks["fc0/kernel"], [[False, True, False]] * 2)
    masks = structured_masks(w, 0.5, "column")  # 3 entries: column 1, then the best of 0
    assert masks["fc0/kernel"][:, 1].all() and masks["fc0/kernel"][:, 0].sum() == 1


def test_bad_scope_or_structure_is_a_config_error():
    with pytest.raises(ConfigError, match="scope"):
        magnitude_masks(latents(), 0.5, "per-head")
    with pytest.raises(ConfigError, match="structure"):
        structured_masks(latents(), 0.5, "block")


def test_random_is_exact_seeded_and_spread():
    ws = latents()
    a = random_masks(ws, 0.9, jax.random.PRNGKey(0))
    b = random_masks(ws, 0.9, jax.random.PRNGKey(0))
    c = random_masks(ws, 0.9, jax.random.PRNGKey(1))
    assert kept(a) == keep_count(n_total(ws), 0.9)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_snip_ranks_by_weight_times_gradient():
    ws = {"fc0/kernel": np.array([[1.0, -2.0], [3.0, 0.5]])}
    grads = {"fc0/kernel": np.array([[4.0, 1.0], [0.1, -10.0]])}
    masks = snip_masks(ws, grads, 0.5)  # saliency 4, 2, 0.3, 5 -> keep 5 and 4
    np.testing.assert_array_equal(masks["fc0/kernel"], [[True, False], [False, True]])
    with pytest.raises(ValueError, match="gradient"):
        snip_masks(ws, {}, 0.5)


def test_fixed_method_returns_its_state_and_no_penalty():
    params = {"fc0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
    method = fixed()
    aux = method.init(params, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(aux["fc0/kernel"], np.ones((2, 3)))
    aux = {"fc0/kernel": jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])}
    ctx = Context(jnp.int32(0), jnp.int32(10))
    objective = to_objective(method, 0.0)
    effective, penalty = objective.transform_and_penalty(params, aux, ctx)
    np.testing.assert_array_equal(effective["fc0"]["kernel"], aux["fc0/kernel"])
    assert float(penalty) == 0.0
    masks = method.mask(params, aux, MaskContext.from_train(ctx, 0.5))
    assert masks["fc0/kernel"] is aux["fc0/kernel"]
