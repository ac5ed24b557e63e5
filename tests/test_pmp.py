"""PMP and the MRMP pieces (docs/methods.md#pmp, #mrmp): thresholds, quantiles, alignment losses,
masks at traced / vmapped rates, registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.api import MaskContext, apply_masks, prunable_leaves, soft_rate
from gcnprune_jax.pruning.pmp import (
    PRIORS,
    alignment_weight,
    kl_histogram,
    mrmp,
    mrmp_masks,
    pmp,
    prior_quantiles,
    prior_scale,
    prior_std,
    threshold,
    wasserstein2,
    wasserstein2_binned,
)
from gcnprune_jax.pruning.shared import band_stop

RATES = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)


def sample_prior(rng: np.random.Generator, prior: str, scale: float, size) -> np.ndarray:
    if prior == "gaussian":
        return rng.normal(0.0, scale, size)
    if prior == "laplace":
        return rng.laplace(0.0, scale, size)
    return rng.uniform(-scale, scale, size)


def ctx_at(step: int = 0, total: int = 10, rate: float = 0.5) -> MaskContext:
    return MaskContext(jnp.int32(step), jnp.int32(total), jnp.float32(rate))


def prior_params(prior: str, seed: int = 0) -> dict:
    """Latent params whose prunable tensors are drawn from the prior, at different scales."""
    rng = np.random.default_rng(seed)
    shapes = {"conv": (4, 30, 40), "kernel": (60, 50), "query": (2, 40, 30)}
    scales = {"conv": 0.05, "kernel": 0.3, "query": 2.0}
    params = {
        name: {
            name: jnp.asarray(sample_prior(rng, prior, scales[name], shape), jnp.float32),
            "bias": jnp.ones(shape[-1]),
        }
        for name, shape in shapes.items()
    }
    return params


@pytest.mark.parametrize("prior", PRIORS)
def test_threshold_is_the_quantile_of_the_magnitude(prior):
    rng = np.random.default_rng(1)
    for scale in (0.01, 0.7, 3.0):
        x = np.abs(sample_prior(rng, prior, scale, 200_000))
        a = np.asarray(threshold(prior, scale, jnp.asarray(RATES)))
        assert a.shape == (len(RATES),)
        for r, a_r in zip(RATES, a, strict=True):
            assert abs(np.mean(x < a_r) - r) < 0.005, (prior, scale, r)
    # closed forms
    np.testing.assert_allclose(threshold("uniform", 2.0, 0.9), 1.8, rtol=1e-6)
    np.testing.assert_allclose(threshold("laplace", 2.0, 0.9), -2.0 * math.log(0.1), rtol=1e-5)
    np.testing.assert_allclose(threshold("gaussian", 1.0, 0.95), 1.959964, rtol=1e-5)
    # traceable in r, finite at the ends
    jitted = jax.jit(lambda r: threshold(prior, 0.5, r))
    np.testing.assert_allclose(jitted(0.9), threshold(prior, 0.5, 0.9), rtol=1e-6)
    ends = threshold(prior, 0.5, jnp.array([0.0, 1.0]))
    assert bool(jnp.all(jnp.isfinite(ends))) and bool(jnp.all(ends > 0))


@pytest.mark.parametrize("prior", PRIORS)
def test_prior_scale_matches_the_init_variance_and_quantiles(prior):
    s = prior_scale(prior, 0.4)
    np.testing.assert_allclose(prior_std(prior, s), 0.4, rtol=1e-6)
    x = sample_prior(np.random.default_rng(2), prior, float(s), 200_000)
    np.testing.assert_allclose(np.std(x), 0.4, rtol=0.01)
    quantiles = jax.jit(prior_quantiles, static_argnums=(0, 2))
    for n in (1, 7, 1000):
        q = np.asarray(quantiles(prior, s, n))
        assert q.shape == (n,) and np.all(np.diff(q) > 0)
        np.testing.assert_allclose(q, -q[::-1], atol=1e-6)
        # empirical quantiles of a large sample at (k - 1/2)/n
        if n == 1000:
            expected = np.quantile(x, (np.arange(1, n + 1) - 0.5) / n)
            np.testing.assert_allclose(q[10:-10], expected[10:-10], atol=0.03)


@pytest.mark.parametrize("prior", PRIORS)
def test_wasserstein2_is_zero_exactly_at_the_quantiles(prior):
    rng = np.random.default_rng(3)
    s = prior_scale(prior, 0.02)
    w2 = jax.jit(wasserstein2, static_argnums=1)
    for shape in ((12, 20), (3, 8, 5)):
        q = np.asarray(prior_quantiles(prior, s, int(np.prod(shape))))
        latent = jnp.asarray(rng.permutation(q).reshape(shape))
        assert float(w2(latent, prior, s)) <= 1e-10
        shifted = latent * 1.1 + 0.001
        assert float(w2(shifted, prior, s)) > 1e-4
    # scale-free: the same relative distortion gives the same loss at any weight scale
    big = prior_scale(prior, 5.0)
    q_big = prior_quantiles(prior, big, 240).reshape(12, 20)
    q_small = prior_quantiles(prior, s, 240).reshape(12, 20)
    np.testing.assert_allclose(w2(1.2 * q_big, prior, big), w2(1.2 * q_small, prior, s), rtol=1e-4)
    grad = jax.jit(jax.grad(wasserstein2), static_argnums=1)
    for latent in (jnp.zeros((6, 7)), jnp.full((2, 3, 4), 0.01), 1.2 * q_small):
        g = grad(latent, prior, s)
        assert g.shape == latent.shape and bool(jnp.all(jnp.isfinite(g)))
        assert float(jnp.sum(jnp.abs(g))) > 0


@pytest.mark.parametrize("prior", PRIORS)
def test_binned_wasserstein_agrees_with_the_sorted_one(prior):
    """Ranks from a histogram: within the histogram's resolution, on a few entries and on a
    million (ranks counted on a strided sample)."""
    s = prior_scale(prior, 0.05)
    value_and_grad = jax.jit(jax.value_and_grad(wasserstein2), static_argnums=1)
    binned = jax.jit(jax.value_and_grad(wasserstein2_binned), static_argnums=1)
    rng = np.random.default_rng(5)
    small = jnp.asarray(rng.normal(0.01, 0.07, (9, 7)), jnp.float32)
    v_sort, g_sort = value_and_grad(small, prior, s)
    v_bin, g_bin = binned(small, prior, s)
    np.testing.assert_allclose(v_bin, v_sort, rtol=1e-3)
    assert float(jnp.linalg.norm(g_bin - g_sort) / jnp.linalg.norm(g_sort)) < 1e-2
    heavy = rng.standard_t(4, 1_000_000) * 0.06 + 0.005  # wider tails than any prior
    large = jnp.asarray(heavy, jnp.float32)
    v_sort, g_sort = value_and_grad(large, prior, s)
    v_bin, g_bin = binned(large, prior, s)
    assert float(v_bin) == pytest.approx(float(v_sort), rel=2e-2)
    assert float(jnp.linalg.norm(g_bin - g_sort) / jnp.linalg.norm(g_sort)) < 5e-2
    # at the prior's own quantiles the binned loss is (nearly) zero, like the exact one
    q = prior_quantiles(prior, s, 4096)
    assert float(binned(jnp.asarray(rng.permutation(np.asarray(q))), prior, s)[0]) < 1e-3


@pytest.mark.parametrize("prior", PRIORS)
def test_kl_histogram_prefers_samples_of_the_prior(prior):
    rng = np.random.default_rng(4)
    s = prior_scale(prior, 0.1)
    sample = jnp.asarray(sample_prior(rng, prior, float(s), (50, 100)), jnp.float32)
    shifted = sample + 0.1
    value_and_grad = jax.jit(jax.value_and_grad(kl_histogram), static_argnums=1)
    kl_sample = float(value_and_grad(sample, prior, s)[0])
    kl_shifted, g = value_and_grad(shifted, prior, s)
    assert 0.0 <= kl_sample < 0.02
    assert float(kl_shifted) > 5 * kl_sample + 0.05
    assert float(jnp.sum(jnp.abs(g))) > 0
    for latent in (shifted, jnp.zeros((50, 100)), jnp.full((50, 100), 100.0)):
        value, g = value_and_grad(latent, prior, s)
        assert float(value) >= 0.0 and bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("prior", PRIORS)
def test_pmp_soft_rate_lands_on_the_target_without_a_budget(prior):
    params = prior_params(prior)
    method = pmp(prior=prior, scope="tensor", mu_end=None)
    aux = method.init(params, jax.random.PRNGKey(0))
    assert set(aux) == set(prunable_leaves(params))
    n_total = sum(w.size for w in prunable_leaves(params).values())
    mask = jax.jit(method.mask)
    for rate in RATES:
        masks = mask(params, aux, ctx_at(step=9, total=10, rate=rate))  # κ = kappa_end
        assert abs(float(soft_rate(masks, n_total)) - rate) < 0.01, (prior, rate)


def test_pmp_mask_is_the_band_stop_at_the_quantile_and_jit_agrees():
    params = prior_params("gaussian")
    method = pmp(
        kappa_start=0.2, kappa_end=0.005, scope="tensor", mu_end=None, alignment="wasserstein"
    )
    aux = method.init(params, jax.random.PRNGKey(0))
    ctx = ctx_at(step=3, total=10, rate=0.9)
    masks = method.mask(params, aux, ctx)
    kappa = 0.2 * (0.005 / 0.2) ** (3 / 9)
    for path, w in prunable_leaves(params).items():
        rms = jnp.sqrt(jnp.mean(jnp.square(w)))
        np.testing.assert_allclose(aux[path], rms, rtol=1e-6)
        a = threshold("gaussian", aux[path], 0.9)
        np.testing.assert_allclose(masks[path], band_stop(w, a, kappa * a), rtol=1e-5, atol=1e-7)
        assert masks[path].shape == w.shape
    jit_masks = jax.jit(method.mask)(params, aux, ctx)
    for path in masks:
        np.testing.assert_allclose(jit_masks[path], masks[path], rtol=1e-5, atol=1e-6)

    # the penalty is μ Σ_ℓ W2², small on prior samples, and has finite gradients
    def loss(latent):
        m = method.mask(latent, aux, ctx)
        effective = apply_masks(latent, m)
        data = sum(jnp.sum(jnp.sin(p)) for p in jax.tree.leaves(effective))
        return data + method.penalty(latent, aux, ctx, m), method.penalty(latent, aux, ctx, m)

    (_, penalty), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    w2 = jax.jit(wasserstein2, static_argnums=1)
    expected = sum(w2(w, "gaussian", aux[p]) for p, w in prunable_leaves(params).items())
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)
    assert 0 < float(penalty) < 0.05
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_kl_alignment_penalty():
    params = prior_params("laplace")
    method = pmp(prior="laplace", alignment="kl", mu=2.0, bins=32, scope="tensor", mu_end=None)
    aux = method.init(params, jax.random.PRNGKey(0))
    ctx = ctx_at()
    value = jax.jit(method.penalty)(params, aux, ctx, {})
    kl = jax.jit(kl_histogram, static_argnums=(1, 3))
    expected = 2.0 * sum(kl(w, "laplace", aux[p], 32) for p, w in prunable_leaves(params).items())
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_alignment_weight_ramps_geometrically_from_mu_to_mu_end():
    params = prior_params("gaussian")
    shifted = jax.tree.map(lambda w: 1.5 * w, params)  # wider than the prior: W2² > 0
    constant, ramped = pmp(mu=2.0, mu_end=None), pmp(mu=2.0, mu_end=200.0)
    aux = constant.init(params, jax.random.PRNGKey(0))
    base = float(constant.penalty(shifted, aux, ctx_at(step=0, total=11), {}))
    assert base > 0
    for step, expected in ((0, 2.0), (5, 20.0), (10, 200.0), (30, 200.0)):
        np.testing.assert_allclose(alignment_weight(2.0, 200.0, step, 11), expected, rtol=1e-5)
        ctx = ctx_at(step=step, total=11)
        # without mu_end the weight stays μ (SPEC §4); with it the same W2² is scaled by μ_t
        np.testing.assert_allclose(constant.penalty(shifted, aux, ctx, {}), base, rtol=1e-6)
        np.testing.assert_allclose(
            jax.jit(ramped.penalty)(shifted, aux, ctx, {}), base * expected / 2.0, rtol=1e-5
        )
    # the masks do not depend on the alignment weight
    ctx = ctx_at(step=4, total=11, rate=0.9)
    for path, m in ramped.mask(shifted, aux, ctx).items():
        np.testing.assert_array_equal(m, constant.mask(shifted, aux, ctx)[path])
    with pytest.raises(ConfigError, match=r"pmp\.mu_end"):
        pmp(mu=0.0, mu_end=10.0)
    with pytest.raises(ConfigError, match=r"mrmp\.mu_end"):
        mrmp(mu_end=-1.0)


def test_mrmp_masks_vmap_over_rates():
    params = prior_params("gaussian")
    method = mrmp(rates=RATES, scope="tensor")
    aux = method.init(params, jax.random.PRNGKey(0))
    ctx = ctx_at(step=9, total=10)
    stacked = jax.jit(lambda lat, a, r: mrmp_masks(lat, a, r, ctx, method))(
        params, aux, jnp.asarray(RATES)
    )
    n_total = sum(w.size for w in prunable_leaves(params).values())
    for path, w in prunable_leaves(params).items():
        assert stacked[path].shape == (len(RATES), *w.shape)
    mask = jax.jit(method.mask)
    for i, rate in enumerate(RATES):
        single = mask(params, aux, ctx._replace(target_rate=jnp.float32(rate)))
        for path in single:
            np.testing.assert_allclose(stacked[path][i], single[path], rtol=1e-5, atol=1e-6)
        rate_i = soft_rate({p: m[i] for p, m in stacked.items()}, n_total)
        assert abs(float(rate_i) - rate) < 0.01
    # default method: PMP's defaults
    default = mrmp_masks(params, aux, [0.5, 0.9], ctx)
    np.testing.assert_allclose(
        default["kernel/kernel"], stacked["kernel/kernel"][jnp.array([0, 2])]
    )


def test_registry_and_validation():
    assert {"pmp", "mrmp"} <= set(api.names())
    assert api.get("pmp", prior="laplace", mu=0.5).name == "pmp"
    assert api.get("mrmp", rates=(0.9, 0.99)).name == "mrmp"
    with pytest.raises(ConfigError, match=r"pmp\.prior must be one of"):
        pmp(prior="cauchy")
    with pytest.raises(ConfigError, match=r"pmp\.alignment"):
        pmp(alignment="mmd")
    with pytest.raises(ConfigError, match=r"pmp\.mu"):
        pmp(mu=-1.0)
    with pytest.raises(ConfigError, match="kappa"):
        pmp(kappa_start=0.001)
    with pytest.raises(ConfigError, match=r"pmp\.warmup"):
        pmp(warmup=2.0)
    with pytest.raises(ConfigError, match=r"pmp\.bins"):
        pmp(bins=1)
    with pytest.raises(ConfigError, match=r"mrmp\.rates"):
        mrmp(rates=(0.5, 1.0))
    with pytest.raises(ConfigError, match=r"mrmp\.rates"):
        mrmp(rates=())
    with pytest.raises(ConfigError, match="bad hyper-parameters"):
        api.get("pmp", alpha=0.5)


def test_pmp_ramps_its_alignment_weight_by_default_and_options_override_it():
    from gcnprune_jax.cli import build_parser, config_from_args
    from gcnprune_jax.config import PruningConfig, default_config

    assert default_config("fpha", "pmp").pruning.mu_end == 100.0
    assert default_config("fpha", "mrmp").pruning.mu_end is None  # as MRMP was measured
    parse = build_parser().parse_args
    cfg = config_from_args(parse(["prune", "--method", "pmp", "--rate", "0.9"]))
    assert (cfg.pruning.mu, cfg.pruning.mu_end) == (1.0, 100.0)
    cfg = config_from_args(parse(["prune", "--method", "pmp", "--rate", "0.9", "--mu-end", "1"]))
    assert cfg.pruning.mu_end == 1.0  # a constant μ = 1
    with pytest.raises(ConfigError, match=r"pruning\.mu_end"):
        PruningConfig(mu=0.0, mu_end=5.0)
    with pytest.raises(ConfigError, match=r"pruning\.mu_end"):
        PruningConfig(mu_end=0.0)
