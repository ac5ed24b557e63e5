"""SSP (SPEC §2): gates that turn one-hot, the rank surrogate's values and gradients on
degenerate masks, and the export's structure guarantee at the exact budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning import ssp as ssp_module
from gcnprune_jax.pruning.api import MaskContext
from gcnprune_jax.pruning.shared import band_stop, group_rms, keep_count
from gcnprune_jax.pruning.ssp import (
    KINDS,
    candidates,
    check_structure,
    chosen_kinds,
    gate_probabilities,
    gated_export,
    nuclear_norm,
    rank_surrogate,
    ssp,
)


def test_gate_softmax_turns_one_hot_as_its_temperature_anneals():
    method = ssp(gate_tau_start=1.0, gate_tau_end=0.01, warmup=0.5, control=False)
    rng = np.random.default_rng(0)
    latent = {"fc0": {"kernel": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)}}
    thresholds, gates = method.init(latent, jax.random.key(0))
    assert gates["fc0/kernel"].shape == (1, 4) and not np.any(gates["fc0/kernel"])
    logits = jnp.asarray([[0.3, 0.1, -0.2, 0.05], [0.0, 0.12, 0.01, -0.1]]) / 10.0
    soft = gate_probabilities(logits * 10.0, 1.0)
    assert float(soft.max()) < 0.5  # hot: mixes all granularities
    cold = gate_probabilities(logits * 10.0, 0.01)
    np.testing.assert_allclose(cold.max(axis=-1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(np.argmax(cold, -1), [0, 1])

    # In the method, at the last step the mask is the band-stop of the chosen candidate.
    w = latent["fc0"]["kernel"]
    gates = {"fc0/kernel": jnp.asarray([[0.0, 0.08, 0.0, 0.0]])}  # row, after x gate_scale
    last = MaskContext(jnp.asarray(99), jnp.asarray(100), jnp.asarray(0.5))
    first = last._replace(step=jnp.asarray(0))
    psi = method.mask(latent, (thresholds, gates), last)["fc0/kernel"]
    a = thresholds["fc0/kernel"]
    expected = band_stop(group_rms(w[None], "row"), a, 0.005 * a)[0]
    np.testing.assert_allclose(psi, expected, atol=1e-4)
    psi0 = method.mask(latent, (thresholds, gates), first)["fc0/kernel"]
    assert np.abs(np.asarray(psi0) - np.asarray(expected)).max() > 1e-2


def test_ruled_out_granularities_are_never_chosen():
    gates = {
        "fc/kernel": np.asarray([[0.0, 0.0, 0.0, 5.0]]),
        "b/conv": np.asarray([[0, 0, 0, 5.0]] * 2),
    }
    kinds = chosen_kinds(gates)
    assert kinds["fc/kernel"] != ["channel"] and kinds["b/conv"] == ["channel", "channel"]
    logits = np.asarray([[0.0, 0.0, 5.0, 4.0]])  # column, then channel preferred
    assert chosen_kinds({"classifier/kernel": logits}) == {"classifier/kernel": ["entry"]}
    assert chosen_kinds({"fc0/kernel": logits}) == {"fc0/kernel": ["column"]}


def test_candidates_are_tied_within_their_groups():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4)), jnp.float32)
    z = np.asarray(candidates(w))
    np.testing.assert_allclose(z[0], np.abs(w))
    assert np.allclose(z[1], z[1][:, :, :1]) and np.allclose(z[2], z[2][:, :1, :])
    assert np.allclose(z[3], z[3][:, :1, :1])
    np.testing.assert_allclose(
        z[3][:, 0, 0], np.sqrt(np.mean(np.square(w), axis=(1, 2))), rtol=1e-6
    )


DEGENERATE = {
    "zeros": np.zeros((5, 4)),
    "ones": np.ones((5, 4)),
    "repeated rows": np.tile([[1.0, 0.0, 1.0, 0.5]], (5, 1)),
    "repeated singular values": np.eye(4, dtype=float)[:, :4].repeat(1, 0),
    "one entry": np.pad([[1.0]], ((0, 4), (0, 3))),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("form", ["normalized", "nuclear"])
def test_rank_surrogate_gradient_is_finite_on_degenerate_masks(name, form):
    psi = jnp.asarray(DEGENERATE[name], jnp.float32)
    grad = jax.grad(lambda m: rank_surrogate({"w": m}, form))(psi)
    assert np.all(np.isfinite(np.asarray(grad))), grad
    stacked = jnp.stack([psi, psi])  # (G, I, O) too
    grad3 = jax.grad(lambda m: rank_surrogate({"w": m}, form))(stacked)
    assert np.all(np.isfinite(np.asarray(grad3)))


def test_rank_surrogate_values():
    ones = jnp.ones((4, 9))
    np.testing.assert_allclose(nuclear_norm(ones), 6.0, rtol=2e-2)  # sqrt(4 * 9), rank one
    assert float(rank_surrogate({"w": ones}, "nuclear")) == pytest.approx(1.0, rel=2e-2)
    rng = np.random.default_rng(5)
    for shape in [(4, 9), (36, 8), (300, 40)]:
        m = (rng.random(shape) > 0.7).astype(np.float32)
        exact = np.linalg.svd(m, compute_uv=False).sum()
        assert float(nuclear_norm(jnp.asarray(m))) == pytest.approx(exact, rel=5e-2)
    assert float(rank_surrogate({"w": jnp.zeros((4, 9))}, "nuclear")) == 0.0
    # normalized: 0 for every rank-one pattern (rows, columns, whole), 1 for the identity
    rows = jnp.asarray(np.outer([1, 0, 1, 1], np.ones(9)), jnp.float32)
    cols = jnp.asarray(np.outer(np.ones(4), np.arange(9) % 2), jnp.float32)
    for m in (ones, rows, cols, jnp.zeros((4, 9))):
        assert float(rank_surrogate({"w": m})) == pytest.approx(0.0, abs=1e-2)
    assert float(rank_surrogate({"w": jnp.eye(4)})) == pytest.approx(1.0, abs=3e-2)
    # scale invariant, unlike the nuclear norm: halving a mask does not lower it
    m = jnp.asarray(np.random.default_rng(2).random((4, 9)) > 0.5, jnp.float32)
    assert float(rank_surrogate({"w": 0.5 * m})) == pytest.approx(
        float(rank_surrogate({"w": m})), rel=1e-5
    )
    assert float(rank_surrogate({"w": m})) > 0.05


def _random_problem(rng, n_tensors=4):
    soft, latents, kinds = {}, {}, {}
    for t in range(n_tensors):
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        if rng.random() < 0.3:
            shape = shape[1:]
        name = f"t{t}"
        latents[name] = rng.normal(size=shape)
        soft[name] = rng.random(shape)
        n_channels = 1 if len(shape) == 2 else shape[0]
        kinds[name] = [KINDS[int(k)] for k in rng.integers(0, 4, n_channels)]
    return soft, latents, kinds


def test_export_keeps_each_gates_structure_at_the_exact_rate():
    rng = np.random.default_rng(0)
    overrides = 0
    for trial in range(300):
        soft, latents, kinds = _random_problem(rng)
        rate = float(rng.choice([0.0, 0.3, 0.5, 0.9, 0.937, 0.99]))
        result = gated_export(soft, latents, rate, kinds)
        total = sum(np.size(v) for v in soft.values())
        assert (
            result.kept
            == keep_count(total, rate)
            == sum(int(m.sum()) for m in result.masks.values())
        )
        granularity = result.details["granularity"]
        for name, mask in result.masks.items():
            assert mask.shape == np.shape(soft[name]) and mask.dtype == bool
            assert check_structure(mask, granularity[name]) == [], (trial, name)
            changed = [
                g
                for g, (a, b) in enumerate(zip(kinds[name], granularity[name], strict=True))
                if a != b
            ]
            assert all(granularity[name][g] == "entry" for g in changed)
        overrides += len(result.details["overridden"])
        # a gate's choice is only ever overridden when no exact fill exists without it
        assert len(result.details["overridden"]) <= 1
    assert overrides < 300


def test_export_prefers_high_scores_and_is_deterministic():
    latents = {"w": np.ones((1, 4, 3))}
    soft = {"w": np.asarray([[[0.9] * 3, [0.1] * 3, [0.8] * 3, [0.2] * 3]])}
    result = gated_export(soft, latents, 0.5, {"w": ["row"]})
    np.testing.assert_array_equal(result.masks["w"][0].all(axis=1), [True, False, True, False])
    assert result.rounding_changed == 0 and result.details["overridden"] == []
    again = gated_export(soft, latents, 0.5, {"w": ["row"]})
    assert np.array_equal(again.masks["w"], result.masks["w"])
    # 5 of 12 kept with 3-entry rows only: no exact fill, one row is cut and reported
    odd = gated_export(soft, latents, 7 / 12, {"w": ["row"]})
    assert odd.kept == 5 and odd.details["granularity"]["w"] == ["entry"]
    assert odd.details["overridden"] and "row -> entry" in odd.details["overridden"][0]


def test_check_structure_names_violations():
    m = np.ones((2, 3, 3), bool)
    m[0, 0, 0] = False
    assert check_structure(m, ["entry", "row"]) == []
    assert check_structure(m, ["row", "row"]) == ["channel 0 (row)"]
    assert check_structure(m, ["channel", "column"]) == ["channel 0 (channel)"]


def test_bad_options_and_registry():
    assert "ssp" in api.names()
    with pytest.raises(ConfigError, match="beta"):
        ssp(beta=-1.0)
    with pytest.raises(ConfigError, match="gate_tau"):
        ssp(gate_tau_start=0.1, gate_tau_end=1.0)
    with pytest.raises(ConfigError, match="rank_form"):
        ssp(rank_form="trace")


def test_gate_logits_train_and_composition_keeps_them_trainable():
    from gcnprune_jax.pruning.ctf import ctf
    from gcnprune_jax.train import FoldData, Split, TrainConfig, Trainer

    rng = np.random.default_rng(3)
    latent = {"fc0": {"kernel": jnp.asarray(rng.normal(size=(6, 4)) * 0.3, jnp.float32)}}

    def apply(params, x, key=None):
        return x.reshape(x.shape[0], -1) @ params["fc0"]["kernel"]

    x = jnp.asarray(rng.normal(size=(16, 2, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, 16), jnp.int32)
    split = Split(x, y, jnp.ones(16))
    data = jax.tree.map(lambda a: a[None], FoldData(split, split))
    for method in (ssp(beta=1.0), api.compose(ctf(), ssp(beta=1.0))):
        assert method.trainable_aux
        objective = api.to_objective(method, 0.5)
        trainer = Trainer(apply, TrainConfig(epochs=20, chunk_epochs=20), objective, n_train=16)
        aux = method.init(latent, jax.random.key(0))
        state = jax.tree.map(lambda a: a[None], trainer.init_state(latent, aux, jax.random.key(1)))
        final, _ = trainer.train_chunk(state, data, 20)
        before = jax.tree.leaves(state.aux[1])
        after = jax.tree.leaves(final.aux[1])
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))  # gates moved
        frozen_before, frozen_after = jax.tree.leaves(state.aux[0]), jax.tree.leaves(final.aux[0])
        assert all(np.array_equal(a, b) for a, b in zip(frozen_before, frozen_after, strict=True))


def test_nuclear_norm_of_a_mask_driven_near_zero_stays_finite():
    # SSP's fc0 mask on a small GCN at r = 0.98 fell to ~1e-12 per entry: the squares inside
    # the Gram matrix's norm underflowed and the iteration diverged to inf.
    rng = np.random.default_rng(3)
    m = jnp.asarray((rng.random((240, 256)) > 0.5) * rng.random((240, 256)), jnp.float32)
    base = float(nuclear_norm(m))
    for scale in (1e-3, 1e-8, 1e-12, 1e-20):
        value = float(nuclear_norm(m * scale))
        assert value == pytest.approx(base * scale, rel=1e-3)
        grad = jax.grad(lambda x: rank_surrogate({"w": x}))(m * scale)
        assert np.all(np.isfinite(np.asarray(grad)))
        assert np.isfinite(float(rank_surrogate({"w": m * scale})))
    # an ordinary mask (largest entry >= 2^-12) is not rescaled: the same bits as before
    assert float(nuclear_norm(m)) == float(ssp_module._nuclear_norm(m, 12, 1e-4))
