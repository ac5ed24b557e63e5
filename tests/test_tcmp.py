"""TCMP (SPEC §3): differentiable accessibility / co-accessibility, the method, its export."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models import GCNConfig, build_gcn
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning import tcmp as tcmp_module
from gcnprune_jax.pruning.api import MaskContext, prunable_leaves
from gcnprune_jax.pruning.shared import budget_loss, exact_export, keep_count
from gcnprune_jax.pruning.tcmp import consistent_export, tcmp
from gcnprune_jax.topology import (
    consistent_masks,
    consistent_masks_soft,
    dangling_connections,
    gcn_consistent,
    gcn_live,
    gcn_mask_shapes,
    hard_saturation,
    soft_saturation,
)

V, F, N_CLASSES = 4, 3, 3
CFG = GCNConfig(heads=2, filters=(3,), attention_dim=2, fc=(8,), attention="neighbours")


def shapes_of(cfg: GCNConfig, n_features: int = F, n_classes: int = N_CLASSES):
    return gcn_mask_shapes(cfg, n_nodes=V, n_features=n_features, n_classes=n_classes)


def random_binary(rng: np.random.Generator, cfg: GCNConfig, density: float):
    return {k: rng.random(s) < density for k, s in shapes_of(cfg).items()}


def params_of(cfg: GCNConfig = CFG):
    _, params = build_gcn(
        cfg,
        n_nodes=V,
        n_features=F,
        n_classes=N_CLASSES,
        adjacency=np.eye(V, dtype=np.float32),
        key=jax.random.PRNGKey(0),
    )
    return params


def context(step: int, total: int = 100, rate: float = 0.9) -> MaskContext:
    return MaskContext(
        step=jnp.asarray(step), total_steps=jnp.asarray(total), target_rate=jnp.asarray(rate)
    )


# ---------------------------------------------------------------------------------------------
# Soft propagation (topology.py)


def test_soft_chain_equals_consistent_masks_on_binary_masks():
    rng = np.random.default_rng(0)
    n_nontrivial = 0
    for _ in range(40):
        widths = rng.integers(1, 5, size=int(rng.integers(2, 6)))
        chain = [
            rng.random((int(a), int(b))) < rng.uniform(0.1, 0.9)
            for a, b in itertools.pairwise(widths)
        ]
        want = consistent_masks(chain)
        got = consistent_masks_soft([m.astype(np.float32) for m in chain], hard_saturation)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(g), w.astype(np.float32))
        n_nontrivial += any(((m > 0) & ~w).any() for m, w in zip(chain, want, strict=True))
    assert n_nontrivial > 5  # some chains have dangling entries that the soft version drops
    assert consistent_masks_soft([], hard_saturation) == []


@pytest.mark.parametrize(
    ("attention", "filters", "fc"),
    list(itertools.product(["adjacency", "neighbours"], [(3,), (2, 3)], [(), (4,), (4, 3)])),
)
def test_gcn_consistent_equals_gcn_live_on_binary_masks(attention, filters, fc):
    cfg = GCNConfig(heads=2, filters=filters, attention_dim=2, fc=fc, attention=attention)
    rng = np.random.default_rng(len(filters) * 10 + len(fc))
    n_dangling = 0
    for density in (0.3, 0.6, 0.9):
        for _ in range(2):
            masks = random_binary(rng, cfg, density)
            live = gcn_live(masks, cfg, n_nodes=V)
            soft = gcn_consistent(masks, cfg, n_nodes=V, h=hard_saturation)
            assert list(soft) == list(masks)
            for name in masks:
                np.testing.assert_array_equal(np.asarray(soft[name]), live[name].astype(float))
            n_dangling += dangling_connections(masks, cfg, n_nodes=V)
    assert n_dangling > 0


def test_gcn_consistent_under_jit_and_vmap():
    rng = np.random.default_rng(3)
    batch = [random_binary(rng, CFG, 0.5) for _ in range(3)]
    stacked = {k: jnp.stack([b[k] for b in batch]).astype(jnp.float32) for k in batch[0]}
    fn = jax.jit(jax.vmap(lambda m: gcn_consistent(m, CFG, n_nodes=V, h=hard_saturation)))
    out = fn(stacked)
    for i, masks in enumerate(batch):
        live = gcn_live(masks, CFG, n_nodes=V)
        for name in masks:
            np.testing.assert_array_equal(np.asarray(out[name][i]), live[name].astype(float))


def test_soft_propagation_tends_to_the_hard_one():
    """τ_h → 0 with near-binary masks: M̃ → M ⊙ (hard accessibility and co-accessibility).

    The off values must be far below τ_h: a dead unit's h(x) ≈ x / τ_h is amplified by τ_h⁻¹
    at every later saturation it feeds through kept entries."""
    cfg = GCNConfig(heads=2, filters=(3, 2), attention_dim=2, fc=(4,), attention="softmax")
    rng = np.random.default_rng(4)
    binary = random_binary(rng, cfg, 0.4)
    live = gcn_live(binary, cfg, n_nodes=V)
    assert dangling_connections(binary, cfg, n_nodes=V) > 0
    near = {k: np.where(m, 0.95, 1e-20).astype(np.float32) for k, m in binary.items()}
    errors = []
    for tau_h in (1.0, 0.3, 0.1, 0.03, 0.01):
        soft = gcn_consistent(near, cfg, n_nodes=V, h=soft_saturation(tau_h))
        errors.append(max(float(np.max(np.abs(soft[k] - near[k] * live[k]))) for k in binary))
    assert errors[0] > 0.5  # at a large τ_h the soft masks are far from the hard ones
    assert all(b < a for a, b in itertools.pairwise(errors[:4]))
    assert max(errors[3:]) < 1e-9


def test_soft_saturation_limits():
    x = jnp.asarray([0.0, 1e-3, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(hard_saturation(x), [0.0, 1e-3, 0.5, 1.0, 1.0])
    h = soft_saturation(0.01)
    np.testing.assert_allclose(h(x), [0.0, 1 - np.exp(-0.1), 1.0, 1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="tau_h"):
        soft_saturation(0.0)


def test_gcn_consistent_shape_errors():
    masks = {k: np.ones(s, np.float32) for k, s in shapes_of(CFG).items()}
    del masks["block0/key"]
    with pytest.raises(ValueError, match="block0/key"):
        gcn_consistent(masks, CFG, n_nodes=V, h=hard_saturation)
    masks = {k: np.ones(s, np.float32) for k, s in shapes_of(CFG).items()}
    with pytest.raises(ValueError, match="fc0/kernel"):
        gcn_consistent(masks, CFG, n_nodes=V + 1, h=hard_saturation)


# ---------------------------------------------------------------------------------------------
# The method


def test_tcmp_is_registered():
    assert "tcmp" in api.names()
    method = api.get("tcmp", model=CFG, n_nodes=V, tau_h=0.05)
    assert method.name == "tcmp" and method.export is not None
    with pytest.raises(ConfigError, match="tau_h"):
        tcmp(CFG, V, tau_h=0.0)
    with pytest.raises(ConfigError, match="n_nodes"):
        tcmp(CFG, 0)
    with pytest.raises(ConfigError, match="kappa"):
        tcmp(CFG, V, kappa_start=0.01, kappa_end=0.1)


def test_masks_under_jit_equal_eager():
    method = tcmp(CFG, V)
    params = params_of()
    aux = method.init(params, jax.random.PRNGKey(1))
    for step in (0, 70, 99):
        ctx = context(step)
        eager = method.mask(params, aux, ctx)
        jitted = jax.jit(method.mask)(params, aux, ctx)
        assert set(eager) == set(prunable_leaves(params))
        for name, m in eager.items():
            assert m.shape == prunable_leaves(params)[name].shape
            assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
            np.testing.assert_allclose(jitted[name], m, rtol=1e-6, atol=1e-7)


def test_budget_gradient_through_the_supervisory_networks_is_finite():
    method = tcmp(CFG, V)
    params = params_of()
    aux = method.init(params, jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(7)
    latent = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(key, p.shape), params)

    @jax.jit
    @jax.grad
    def grad(lat, ctx):
        return method.penalty(lat, aux, ctx, method.mask(lat, aux, ctx))

    for step in (0, 60, 99):
        grads = prunable_leaves(grad(latent, context(step)))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads.values())
        assert any(float(jnp.max(jnp.abs(g))) > 0 for g in grads.values())


def test_budget_counts_only_consistent_connections():
    """A kept conv column whose unit feeds nothing is not counted by the budget."""
    method = tcmp(CFG, V, tau_h=0.05, warmup=0.0, lam=1e4)  # budget_loss default λ
    params = params_of()
    signs = jax.tree.map(lambda p: jnp.where(p >= 0, 1.0, -1.0), params)  # |Ŵ| = 1: all kept
    aux = method.init(signs, jax.random.PRNGKey(0))  # a_ℓ = 0.5
    width = CFG.heads * CFG.filters[0]
    unit = 1 * CFG.filters[0] + 2  # head 1, filter 2
    rows = np.arange(V) * width + unit  # its rows of fc0 at every node
    latent = jax.tree.map(lambda p: p, signs)
    latent["fc0"]["kernel"] = latent["fc0"]["kernel"].at[rows].set(0.0)
    ctx = context(99, rate=0.5)  # κ = κ_min: the magnitude masks are binary
    masks = method.mask(latent, aux, ctx)

    crisp = {k: np.abs(np.asarray(w)) > 0.25 for k, w in prunable_leaves(latent).items()}
    live = gcn_live(crisp, CFG, n_nodes=V)
    assert not live["block0/conv"][1, :, 2].any()  # the column is kept but dangling
    n_live = sum(int(m.sum()) for m in live.values())
    n_kept = sum(int(m.sum()) for m in crisp.values())
    assert n_kept - n_live == F  # exactly its F conv entries
    for name in crisp:
        np.testing.assert_allclose(masks[name], live[name].astype(float), atol=1e-5)

    n_total = sum(m.size for m in crisp.values())
    penalty = method.penalty(latent, aux, ctx, masks)
    np.testing.assert_allclose(penalty, budget_loss(live, 0.5, n_total), rtol=1e-4)
    assert abs(float(penalty) - float(budget_loss(crisp, 0.5, n_total))) > 1e-3


# ---------------------------------------------------------------------------------------------
# Export


RATES = (0.5, 0.9, 0.95, 0.98, 0.99, 0.995)


def min_path(cfg: GCNConfig) -> int:
    """Entries of the shortest input→output path: one conv entry per block, one per kernel."""
    return len(cfg.filters) + len(cfg.fc) + 1


def check_export(result, soft, cfg, rate, exact_required=True):
    total = sum(np.size(m) for m in soft.values())
    c = keep_count(total, rate)
    kept = sum(int(m.sum()) for m in result.masks.values())
    assert dangling_connections(result.masks, cfg, n_nodes=V) == 0
    assert set(result.masks) == set(soft)
    assert all(result.masks[k].shape == np.shape(soft[k]) for k in soft)
    assert result.kept == kept <= c and result.total == total
    assert result.realized_rate == pytest.approx(1.0 - kept / total)
    psi = np.concatenate([np.ravel(soft[k]) for k in sorted(soft)])
    keep = np.concatenate([result.masks[k].ravel() for k in sorted(soft)])
    assert result.soft_rate == pytest.approx(1.0 - psi.sum() / total)
    assert result.rounding_changed == int(np.count_nonzero(keep != (psi > 0.5)))
    if c >= min_path(cfg):
        assert kept == c or not exact_required
    else:
        assert kept == 0  # no input→output path is that short: exactly c is impossible
    return kept == c


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(
    "cfg",
    [
        CFG,  # N = 258: c = 1 < 3 at r = 0.995 is infeasible
        GCNConfig(heads=2, filters=(3,), attention_dim=2, fc=(32,), attention="neighbours"),
        GCNConfig(heads=2, filters=(2, 3), attention_dim=2, fc=(8, 6), attention="adjacency"),
    ],
)
def test_export_has_no_dangling_connections_and_exactly_c(cfg, rate):
    rng = np.random.default_rng(int(rate * 1000))
    n_dangling_plain = 0
    for _ in range(2):
        latents = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes_of(cfg).items()}
        soft = {k: rng.random(s).astype(np.float32) for k, s in shapes_of(cfg).items()}
        check_export(consistent_export(soft, latents, rate, cfg=cfg, n_nodes=V), soft, cfg, rate)
        n_dangling_plain += dangling_connections(
            exact_export(soft, latents, rate).masks, cfg, n_nodes=V
        )
    assert n_dangling_plain > 0  # the plain exact export would have left dangling entries


def test_export_of_the_method_masks():
    method = tcmp(CFG, V)
    params = params_of()
    aux = method.init(params, jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    latent = jax.tree.map(lambda p: p + 0.2 * jax.random.normal(key, p.shape), params)
    soft = jax.device_get(method.mask(latent, aux, context(80)))
    leaves = {k: np.asarray(w) for k, w in prunable_leaves(latent).items()}
    for rate in RATES:
        check_export(method.export(soft, leaves, rate), soft, CFG, rate)


def test_export_keeps_a_consistent_soft_selection_unchanged():
    """When 1[ψ > 1/2] is already consistent and has c entries, the export returns it."""
    rng = np.random.default_rng(5)
    live = gcn_live(random_binary(rng, CFG, 0.5), CFG, n_nodes=V)
    soft = {k: np.where(m, 0.8, 0.2) + 0.01 * rng.random(m.shape) for k, m in live.items()}
    latents = {k: rng.normal(size=m.shape) for k, m in live.items()}
    total = sum(m.size for m in live.values())
    rate = 1.0 - sum(int(m.sum()) for m in live.values()) / total
    result = consistent_export(soft, latents, rate, cfg=CFG, n_nodes=V)
    assert result.rounding_changed == 0
    assert all(np.array_equal(result.masks[k], live[k]) for k in live)


def test_export_reaches_c_when_pairs_and_swaps_are_needed(monkeypatch):
    """Tiny networks (one feature, one filter) where single additions run out."""
    calls = {"pair": 0, "drop": 0}
    pair, drop = tcmp_module._best_pair, tcmp_module._drop_one

    def counted_pair(*args):
        calls["pair"] += 1
        return pair(*args)

    def counted_drop(*args):
        calls["drop"] += 1
        return drop(*args)

    monkeypatch.setattr(tcmp_module, "_best_pair", counted_pair)
    monkeypatch.setattr(tcmp_module, "_drop_one", counted_drop)
    cfg = GCNConfig(heads=1, filters=(1,), attention_dim=2, fc=(2, 5), attention="adjacency")
    shapes = shapes_of(cfg, n_features=1, n_classes=2)
    rng = np.random.default_rng(0)
    for _ in range(4):
        for rate in (0.3, 0.5, 0.8):
            soft = {k: rng.random(s) for k, s in shapes.items()}
            latents = {k: rng.normal(size=s) for k, s in shapes.items()}
            result = consistent_export(soft, latents, rate, cfg=cfg, n_nodes=V)
            check_export(result, soft, cfg, rate)
    assert calls["pair"] > 0 and calls["drop"] > 0


def test_export_input_errors():
    soft = {k: np.ones(s) for k, s in shapes_of(CFG).items()}
    latents = dict(soft)
    del latents["block0/key"]
    with pytest.raises(ValueError, match="different tensors"):
        consistent_export(soft, latents, 0.5, cfg=CFG, n_nodes=V)
    latents = {k: np.ones((2, 2)) if k == "fc0/kernel" else v for k, v in soft.items()}
    with pytest.raises(ValueError, match="fc0/kernel"):
        consistent_export(soft, latents, 0.5, cfg=CFG, n_nodes=V)
    with pytest.raises(ValueError, match="finite"):
        bad = {k: np.full(np.shape(v), np.nan) for k, v in soft.items()}
        consistent_export(bad, soft, 0.5, cfg=CFG, n_nodes=V)


def test_tcmp_defaults_come_from_the_method_and_options_override_them():
    from gcnprune_jax.cli import build_parser, config_from_args
    from gcnprune_jax.config import default_config, method_defaults

    assert method_defaults("tcmp") == {
        "kappa_start": 0.5,
        "budget_lambda": 3e3,
        "zero_floor": True,
        "budget_control": True,
        "finetune": 0.3,
    }
    ctf = {"zero_floor": True, "finetune": 0.3, "consistent_export": True}
    assert method_defaults("ctf") == ctf
    assert default_config("sbu", "tcmp").pruning.kappa_start == 0.5
    assert default_config("sbu", "ctf").pruning.kappa_start == 0.2
    parse = build_parser().parse_args
    cfg = config_from_args(parse(["prune", "--method", "tcmp", "--rate", "0.9"]))
    assert (cfg.pruning.kappa_start, cfg.pruning.budget_lambda) == (0.5, 3e3)
    cfg = config_from_args(
        parse(["prune", "--method", "tcmp", "--rate", "0.9", "--kappa-start", "0.3"])
    )
    assert (cfg.pruning.kappa_start, cfg.pruning.budget_lambda) == (0.3, 3e3)
    cfg = config_from_args(parse(["prune", "--method", "ctf", "--rate", "0.9"]))
    assert (cfg.pruning.kappa_start, cfg.pruning.budget_lambda) == (0.2, 1e3)
