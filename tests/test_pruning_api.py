"""The method interface (pruning/api.py) and CTF (SPEC §1), on tiny hand-made parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.api import (
    MaskContext,
    PruningMethod,
    apply_masks,
    compose,
    prunable_leaves,
    soft_rate,
    to_objective,
)
from gcnprune_jax.pruning.ctf import ctf
from gcnprune_jax.pruning.shared import band_stop, init_threshold
from gcnprune_jax.runner import Run
from gcnprune_jax.train import Context, Trainer, stack_trees

N_PRUNABLE = 2 * 3 * 4 + 5 * 6


def tiny_params(seed: int = 0) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "block0": {"conv": jax.random.normal(k1, (2, 3, 4)), "bias": jax.random.normal(k3, (4,))},
        "fc0": {"kernel": jax.random.normal(k2, (5, 6)), "bias": jnp.ones((6,))},
    }


def ctx_at(step: int = 0, total: int = 10, rate: float = 0.5) -> MaskContext:
    return MaskContext.from_train(Context(jnp.int32(step), jnp.int32(total)), rate)


def test_prunable_leaves_selects_by_key_path():
    params = tiny_params()
    leaves = prunable_leaves(params)
    assert list(leaves) == ["block0/conv", "fc0/kernel"]
    assert leaves["fc0/kernel"] is params["fc0"]["kernel"]


def test_apply_masks_multiplies_prunable_leaves_only():
    params = tiny_params()
    masks = {
        "block0/conv": jnp.arange(24.0).reshape(2, 3, 4) / 24,
        "fc0/kernel": jnp.full((5, 6), 0.25),
    }
    out = apply_masks(params, masks)
    np.testing.assert_array_equal(
        out["block0"]["conv"], params["block0"]["conv"] * masks["block0/conv"]
    )
    np.testing.assert_array_equal(out["fc0"]["kernel"], params["fc0"]["kernel"] * 0.25)
    assert out["block0"]["bias"] is params["block0"]["bias"]
    assert out["fc0"]["bias"] is params["fc0"]["bias"]
    with pytest.raises(ValueError, match="exactly the prunable"):
        apply_masks(params, {"fc0/kernel": masks["fc0/kernel"]})
    with pytest.raises(ValueError, match="shape"):
        apply_masks(params, {**masks, "fc0/kernel": jnp.ones((6, 5))})


def _constant_method(name: str, value: float, weight: float) -> PruningMethod:
    """A method with mask `value` everywhere and penalty weight · Σψ (of the masks passed)."""
    return PruningMethod(
        name=name,
        init=lambda latent, key: {"value": jnp.float32(value)},
        mask=lambda latent, aux, ctx: {
            n: jnp.full(w.shape, aux["value"]) for n, w in prunable_leaves(latent).items()
        },
        penalty=lambda latent, aux, ctx, masks: weight * sum(jnp.sum(m) for m in masks.values()),
    )


def test_compose_multiplies_masks_and_sums_penalties():
    params, ctx = tiny_params(), ctx_at()
    parts = (ctf(alpha=0.7), _constant_method("half", 0.5, 2.0))
    both = compose(*parts)
    assert both.name == "ctf+half"
    aux = both.init(params, jax.random.PRNGKey(0))
    assert len(aux) == 2
    masks = both.mask(params, aux, ctx)
    for name in masks:
        expected = parts[0].mask(params, aux[0], ctx)[name] * 0.5
        np.testing.assert_allclose(masks[name], expected, rtol=1e-6)
    penalty = both.penalty(params, aux, ctx, masks)
    expected = parts[0].penalty(params, aux[0], ctx, masks) + 2.0 * sum(
        float(jnp.sum(m)) for m in masks.values()
    )
    np.testing.assert_allclose(penalty, expected, rtol=1e-6)
    with pytest.raises(ConfigError):
        compose()


def test_ctf_entry_only_is_the_plain_band_stop():
    params, ctx = tiny_params(), ctx_at(step=3, total=10)
    # The SPEC §1 schedule: no budget warmup, κ annealed from κ_0 = 0.5 over all steps.
    method = ctf(granularities=("entry",), alpha=0.8, kappa_start=0.5, warmup=0.0, zero_floor=False)
    aux = method.init(params, jax.random.PRNGKey(0))
    masks = method.mask(params, aux, ctx)
    kappa = 0.5 * (0.005 / 0.5) ** (3 / 9)
    for name, w in prunable_leaves(params).items():
        a = init_threshold(w, 0.8)
        assert float(aux[name]) == float(a)
        np.testing.assert_allclose(masks[name], band_stop(w, a, kappa * a), rtol=1e-6, atol=0)
        assert masks[name].shape == w.shape


def test_ctf_holds_the_temperature_during_the_budget_warmup():
    params = tiny_params()
    method = ctf(granularities=("entry",), kappa_start=0.2, warmup=0.5, hold=True, zero_floor=False)
    aux = method.init(params, jax.random.PRNGKey(0))
    w, a = params["fc0"]["kernel"], aux["fc0/kernel"]
    for step, kappa in [(0, 0.2), (4, 0.2), (5, 0.2), (7, 0.2 * (0.005 / 0.2) ** 0.5), (9, 0.005)]:
        masks = method.mask(params, aux, ctx_at(step=step, total=10))
        np.testing.assert_allclose(masks["fc0/kernel"], band_stop(w, a, kappa * a), rtol=1e-5)
    # the budget's target ramps: at step 0 the penalty asks for rate 0
    full = {k: jnp.ones_like(v) for k, v in masks.items()}
    assert float(method.penalty(params, aux, ctx_at(step=0, total=10, rate=0.9), full)) == 0.0
    assert float(method.penalty(params, aux, ctx_at(step=5, total=10, rate=0.9), full)) > 0.0


def test_ctf_coarse_factor_removes_a_weak_row():
    params = tiny_params()
    method = ctf(alpha=0.5)
    aux = method.init(params, jax.random.PRNGKey(0))
    # Row 1 of channel 0 far below threshold, with one large entry: the entry factor alone
    # would keep that entry, the row factor removes the whole row.
    conv = params["block0"]["conv"].at[0, 1].set(jnp.array([1e-3, -1e-3, 2e-3, 0.0]))
    conv = conv.at[0, 1, 3].set(1.5 * aux["block0/conv"])  # row rms 0.75 a
    kernel = params["fc0"]["kernel"].at[2].set(1e-4)
    params = {
        **params,
        "block0": {**params["block0"], "conv": conv},
        "fc0": {**params["fc0"], "kernel": kernel},
    }
    masks = method.mask(params, aux, ctx_at(step=9, total=10))
    entry_only = ctf(granularities=("entry",)).mask(params, aux, ctx_at(step=9, total=10))
    assert float(entry_only["block0/conv"][0, 1, 3]) > 0.99
    assert float(jnp.max(masks["block0/conv"][0, 1])) < 1e-3
    assert float(jnp.max(masks["fc0/kernel"][2])) < 1e-3
    # Other rows are untouched by the row factor: some of their entries stay kept.
    assert float(jnp.max(masks["block0/conv"][1])) > 0.5
    for m in masks.values():
        assert float(jnp.min(m)) >= 0.0 and float(jnp.max(m)) <= 1.0


def test_ctf_validates_granularities_and_hyper_parameters():
    with pytest.raises(ConfigError, match="granularities"):
        ctf(granularities=("entry", "block"))
    with pytest.raises(ConfigError, match="granularities"):
        ctf(granularities=())
    with pytest.raises(ConfigError, match="kappa"):
        ctf(kappa_start=0.01, kappa_end=0.1)


def test_gradients_are_finite_and_jit_agrees():
    params, ctx = tiny_params(), ctx_at(step=2, rate=0.9)
    method = ctf()
    aux = method.init(params, jax.random.PRNGKey(0))
    # A zero row exercises the rms at 0 (its gradient must stay finite).
    params["fc0"]["kernel"] = params["fc0"]["kernel"].at[0].set(0.0)

    def loss(latent):
        masks = method.mask(latent, aux, ctx)
        effective = apply_masks(latent, masks)
        data = sum(jnp.sum(jnp.sin(p)) for p in jax.tree.leaves(effective))
        return data + method.penalty(latent, aux, ctx, masks)

    # Gradients under jit only (eager autodiff is slow on a busy CPU); values both ways.
    jit_value, grads = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(jit_value, loss(params), rtol=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(jnp.sum(jnp.abs(grads["fc0"]["kernel"]))) > 0
    masks = method.mask(params, aux, ctx)
    assert float(method.penalty(params, aux, ctx, masks)) > 0
    jit_masks = jax.jit(method.mask)(params, aux, ctx)
    for name in masks:
        np.testing.assert_allclose(jit_masks[name], masks[name], rtol=1e-6, atol=1e-7)


def test_soft_rate_and_budget_penalty():
    masks = {"a": jnp.ones((2, 3, 4)), "b": jnp.zeros((5, 6))}
    np.testing.assert_allclose(soft_rate(masks, N_PRUNABLE), 1 - 24 / N_PRUNABLE, rtol=1e-6)
    method = ctf(lam=2.0)
    ctx = ctx_at(rate=0.0)
    expected = 2.0 * ((24 - N_PRUNABLE) / N_PRUNABLE) ** 2
    np.testing.assert_allclose(method.penalty(None, None, ctx, masks), expected, rtol=1e-6)


def test_registry():
    assert "ctf" in api.names()
    method = api.get("ctf", granularities=("row",), lam=3.0)
    assert method.name == "ctf"
    with pytest.raises(ConfigError, match=r"known methods.*ctf"):
        api.get("no-such-method")
    with pytest.raises(ConfigError, match="hyper-parameters"):
        api.get("ctf", temperature=1.0)
    with pytest.raises(ValueError, match="already registered"):
        api.register("ctf", lambda: None)


def test_to_objective_trains_in_the_shared_step_and_traces_once():
    run = Run(tiny_config(), make_synthetic(seed=0))
    method = ctf()
    trainer = Trainer(
        run.apply_fn, run.cfg.train, to_objective(method, 0.9), n_train=run.data.train.y.shape[1]
    )
    n_folds = run.data.train.y.shape[0]
    states = []
    for fold in range(n_folds):
        latent = jax.tree.map(lambda a, f=fold: a[f], run.initial_state.latent)
        states.append(
            trainer.init_state(
                latent, method.init(latent, jax.random.PRNGKey(fold)), jax.random.PRNGKey(fold)
            )
        )
    state = stack_trees(states)
    state, metrics = trainer.train_chunk(state, run.data, 2)
    state, metrics = trainer.train_chunk(state, run.data, 2)
    assert trainer.trace_count == 1
    assert metrics["penalty"].shape == (n_folds, 2)
    assert bool(jnp.all(metrics["penalty"] > 0))
    assert bool(jnp.all(jnp.isfinite(metrics["loss"])))
    # The effective network is masked: evaluation differs from the dense latent network.
    dense = run.trainer.evaluate(state._replace(aux={}), run.data.test)
    masked = trainer.evaluate(state, run.data.test)
    assert not np.allclose(dense["loss"], masked["loss"])


@pytest.mark.parametrize("method", ["ctf", "ssp", "tcmp", "pmp", "mrmp"])
def test_library_defaults_are_the_command_lines(method):
    """`api.get(name)` (the factory's own defaults) builds what `gcnprune prune --method name`
    trains: every hyper-parameter the CLI passes equals the factory's default."""
    import inspect

    from gcnprune_jax.config import default_config
    from gcnprune_jax.pruning import ctf as ctf_module
    from gcnprune_jax.pruning import pmp as pmp_module
    from gcnprune_jax.pruning import ssp as ssp_module
    from gcnprune_jax.pruning import tcmp as tcmp_module
    from gcnprune_jax.runner import _method_hyper

    factory = {
        "ctf": ctf_module.ctf,
        "ssp": ssp_module.ssp,
        "tcmp": tcmp_module.tcmp,
        "pmp": pmp_module.pmp,
        "mrmp": pmp_module.mrmp,
    }[method]
    cfg = default_config("synthetic", method).replace(method=method, target_rate=0.9)
    cli_hyper = _method_hyper(cfg, n_nodes=15)
    defaults = inspect.signature(factory).parameters
    differing = {
        name: (defaults[name].default, value)
        for name, value in cli_hyper.items()
        if name not in ("model", "n_nodes") and defaults[name].default != value
    }
    assert differing == {}, f"{method}: factory default vs command line: {differing}"
