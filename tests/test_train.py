"""The shared train step: the author's learning-rate rule, padding, tracing, seeds, folds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import DivergenceError
from gcnprune_jax.runner import Run, run_training
from gcnprune_jax.train import (
    DENSE,
    TrainConfig,
    Trainer,
    scale_by_loss_trend,
    weighted_cross_entropy,
)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(seed=0)


def test_loss_trend_rule_by_hand():
    tx = scale_by_loss_trend(0.5)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.ones(2)}
    scales = []
    for loss in [4.0, 3.0, 5.0, 5.0, 1.0]:
        updates, state = tx.update(grads, state, params, value=loss)
        scales.append(float(updates["w"][0]))
    # first step keeps 1; fell -> /0.5; rose -> *0.5; equal (not a rise) -> /0.5; fell -> /0.5
    assert scales == [1.0, 2.0, 1.0, 2.0, 4.0]


def test_loss_curvature_rule_by_hand():
    from gcnprune_jax.train import learning_rate, make_optimizer, scale_by_loss_curvature

    tx = scale_by_loss_curvature(0.5)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    grads = {"w": jnp.ones(2)}
    scales = []
    # derivatives: -, -1, -2 (fell), +4 (rose), -4 (fell), +1 (rose)
    for loss in [4.0, 3.0, 1.0, 5.0, 1.0, 2.0]:
        updates, state = tx.update(grads, state, params, value=loss)
        scales.append(float(updates["w"][0]))
    assert scales == [1.0, 1.0, 2.0, 1.0, 2.0, 1.0]
    cfg = TrainConfig(schedule="adaptive2")
    opt = make_optimizer(cfg, 10)
    opt_state = opt.init(params)
    assert float(learning_rate(opt_state, cfg)) == pytest.approx(1e-3)


def test_adaptive_optimizer_chains_with_value():
    from gcnprune_jax.train import make_optimizer

    tx = make_optimizer(TrainConfig(), 10)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    updates, _ = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.float32(1.0))
    # Adam's first step is ~ -lr * sign(g)
    np.testing.assert_allclose(updates["w"], -1e-3, rtol=1e-3)


def test_padding_rows_change_nothing():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 3, 0])
    ce, acc = weighted_cross_entropy(logits[:3], y[:3], jnp.ones(3))
    w = jnp.asarray([1.0, 1.0, 1.0, 0.0, 0.0])
    ce_pad, acc_pad = weighted_cross_entropy(logits, y, w)
    np.testing.assert_allclose(ce, ce_pad, rtol=1e-6)
    np.testing.assert_allclose(acc, acc_pad)
    np.testing.assert_allclose(
        ce, optax.softmax_cross_entropy_with_integer_labels(logits[:3], y[:3]).mean(), rtol=1e-6
    )


def test_train_step_traces_once_per_configuration(synthetic):
    run = Run(tiny_config(), synthetic)
    state = run.initial_state
    for _ in range(3):
        state, _ = run.trainer.train_chunk(state, run.data, 2)
    assert run.trainer.trace_count == 1
    run.trainer.train_chunk(state, run.data, 1)  # a new chunk length is a new program
    assert run.trainer.trace_count == 2


def test_training_learns_the_synthetic_task(synthetic, tmp_path):
    cfg = tiny_config(epochs=60, chunk_epochs=30)
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    n_classes = synthetic.n_classes
    assert result["accuracy"] > 2.0 / n_classes  # clearly above chance
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]


def test_same_seed_same_digest_other_seed_differs(synthetic, tmp_path):
    cfg = tiny_config()
    a = run_training(cfg, tmp_path / "a", dataset=synthetic)
    b = run_training(cfg, tmp_path / "b", dataset=synthetic)
    c = run_training(cfg.replace(seed=1), tmp_path / "c", dataset=synthetic)
    assert a["params_digest"] == b["params_digest"]
    assert a["params_digest"] != c["params_digest"]


def test_minibatch_epochs(synthetic, tmp_path):
    cfg = tiny_config(batch_size=100)
    run = Run(cfg, synthetic)
    assert run.trainer.steps_per_epoch == -(-int((synthetic.groups == 0).sum()) // 100)
    result = run_training(cfg, tmp_path / "mb", dataset=synthetic)
    assert np.isfinite(result["history"][-1]["loss"])
    assert result["history"][-1]["epoch"] == 6


def test_divergence_stops_and_keeps_last_good_checkpoint(synthetic, tmp_path):
    # A huge constant step makes the logits overflow within a few epochs.
    cfg = tiny_config(learning_rate=1e30, schedule="constant", epochs=40, chunk_epochs=1)
    with pytest.raises(DivergenceError, match="last good checkpoint") as info:
        run_training(cfg, tmp_path / "nan", dataset=synthetic)
    from gcnprune_jax.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path / "nan" / "checkpoint")
    last = ckpt.latest_epoch()
    assert last is not None and f"(epoch {last})" in str(info.value)
    state, _ = ckpt.restore(Run(cfg, synthetic).initial_state)
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state.latent))
    ckpt.close()


def test_vmapped_folds_match_single_fold_runs():
    """The 5 SBU-style folds trained together equal each fold trained alone."""
    ds = make_synthetic(seed=0)
    # Give the synthetic set 3 "folds" so the fold axis has sizes that need padding.
    groups = np.arange(len(ds)) % 3
    ds3 = type(ds)(**{**ds.__dict__, "name": "sbu", "groups": groups})
    base = tiny_config().replace(dataset="sbu")
    together = Run(base, ds3)
    assert together.data.train.x.shape[0] == 5  # SBU: 5 folds; folds 3 and 4 are empty tests
    state, _ = together.trainer.train_chunk(together.initial_state, together.data, 3)
    for k in (0, 2):
        alone = Run(base.replace(fold=str(k + 1)), ds3)
        s, _ = alone.trainer.train_chunk(alone.initial_state, alone.data, 3)
        for a, b in zip(jax.tree.leaves(s.latent), jax.tree.leaves(state.latent), strict=True):
            np.testing.assert_allclose(a[0], b[k], rtol=2e-4, atol=2e-6)


def test_trainer_accepts_an_objective(synthetic):
    """A method plugs in through Objective without editing the train step."""
    from gcnprune_jax.train import Objective

    halve = Objective(
        transform=lambda latent, aux, ctx: jax.tree.map(lambda p: p * aux["scale"], latent),
        penalty=lambda latent, aux, ctx: 0.1 * sum(jnp.sum(p**2) for p in jax.tree.leaves(latent)),
    )
    run = Run(tiny_config(), synthetic)
    trainer = Trainer(run.apply_fn, run.cfg.train, halve, n_train=run.data.train.y.shape[1])
    latent = jax.tree.map(lambda a: a[0], run.initial_state.latent)
    state = trainer.init_state(latent, {"scale": jnp.float32(0.5)}, jax.random.PRNGKey(0))
    stacked = jax.tree.map(lambda a: a[None], state)
    _, metrics = trainer.train_chunk(stacked, run.data, 1)
    assert float(metrics["penalty"][0, 0]) > 0
    dense = Trainer(run.apply_fn, run.cfg.train, DENSE, n_train=run.data.train.y.shape[1])
    _, dense_metrics = dense.train_chunk(
        jax.tree.map(lambda a: a[None], dense.init_state(latent, {}, jax.random.PRNGKey(0))),
        run.data,
        1,
    )
    assert float(dense_metrics["penalty"][0, 0]) == 0.0
    assert not np.isclose(float(metrics["ce"][0, 0]), float(dense_metrics["ce"][0, 0]))


def test_swap_persons_doubles_two_person_training_sets(synthetic):
    # A two-person stand-in for SBU: person B is person A shifted, 5 folds by index.
    seqs = tuple(np.concatenate([s, s + 1.0], axis=1) for s in synthetic.sequences[:60])
    ds = type(synthetic)(
        name="sbu",
        sequences=seqs,
        labels=synthetic.labels[:60],
        groups=np.arange(60) % 5,
        ids=synthetic.ids[:60],
        class_names=synthetic.class_names,
        joint_names=synthetic.joint_names * 2,
        edges=synthetic.edges,
        n_persons=2,
    )
    cfg = tiny_config().replace(dataset="sbu")
    plain = Run(cfg, ds).data
    both = Run(cfg.replace(features=dataclasses.replace(cfg.features, swap_persons=True)), ds).data
    assert both.train.x.shape[1] == 2 * plain.train.x.shape[1]
    assert both.test.x.shape == plain.test.x.shape  # test sequences are not augmented
    n = int(plain.train.w[0].sum())
    first, second = both.train.x[0, :n], both.train.x[0, n : 2 * n]
    np.testing.assert_allclose(second[:, :15], first[:, 15:], atol=1e-5)
    np.testing.assert_array_equal(both.train.y[0, :n], both.train.y[0, n : 2 * n])


def test_augmented_copies_extend_training_only_and_are_seeded(synthetic):
    cfg = tiny_config()
    aug = cfg.replace(features=dataclasses.replace(cfg.features, augment_copies=2))
    plain, a, b = Run(cfg, synthetic).data, Run(aug, synthetic).data, Run(aug, synthetic).data
    assert a.train.x.shape[1] == 3 * plain.train.x.shape[1]
    # Test sequences are never augmented: same rows and labels, and their features differ
    # only by the standardization (fitted on the larger training set), an affine map.
    np.testing.assert_array_equal(a.test.y, plain.test.y)
    rows = plain.test.w[0] > 0
    x_plain = plain.test.x[0][rows].reshape(-1, plain.test.x.shape[-1])
    x_aug = a.test.x[0][rows].reshape(-1, a.test.x.shape[-1])
    for f in range(x_plain.shape[1]):
        slope, offset = np.polyfit(x_plain[:, f], x_aug[:, f], 1)
        np.testing.assert_allclose(slope * x_plain[:, f] + offset, x_aug[:, f], atol=1e-4)
    np.testing.assert_array_equal(a.train.x, b.train.x)  # same seed, same copies
    other = Run(aug.replace(seed=1), synthetic).data
    assert not np.array_equal(other.train.x, a.train.x)


def test_train_chunk_jit_and_eager_agree(synthetic):
    run = Run(tiny_config(), synthetic)
    jitted, jitted_metrics = run.trainer.train_chunk(run.initial_state, run.data, 2)
    with jax.disable_jit():
        eager, eager_metrics = run.trainer._train_chunk(run.initial_state, run.data, 2)
    np.testing.assert_allclose(jitted_metrics["loss"], eager_metrics["loss"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(jitted.latent), jax.tree.leaves(eager.latent), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
