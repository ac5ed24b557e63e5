"""What makes the learned methods deliver: the validation part, the zero-floor band-stop, the
budget controller, PMP's global prior, fine-tuning after the export, and crisp_fraction."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from test_cli import gcnprune

from gcnprune_jax.config import PruningConfig, RunConfig, default_config
from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.pmp import pmp, threshold
from gcnprune_jax.pruning.shared import (
    band_stop,
    budget_control_term,
    keep_count,
    threshold_factor,
)
from gcnprune_jax.runner import Run, crisp_fraction, make_fold_data, run_training, validation_part


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(seed=0)


def _pruned(method: str, rate: float, epochs: int = 8, chunk: int = 2, **pruning) -> RunConfig:
    cfg = tiny_config(epochs=epochs, chunk_epochs=chunk)
    return cfg.replace(
        method=method,
        target_rate=rate,
        pruning=PruningConfig(**{**cfg.pruning.__dict__, **pruning}),
    )


# --- the validation part ------------------------------------------------------------------


def test_validation_part_is_stratified_disjoint_and_seed_free():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    train = np.ones(labels.size, bool)
    train[::7] = False  # some sequences belong to the test split
    val = validation_part(train, labels, 0.2, fold=0)
    assert not (val & ~train).any(), "validation sequences come from the training split only"
    for c in range(4):
        members = train & (labels == c)
        picked = int((val & members).sum())
        if members.sum() >= 2:  # at least one held out, at least one left to train on
            assert 1 <= picked <= members.sum() - 1
            assert picked == min(max(round(0.2 * members.sum()), 1), members.sum() - 1)
        else:
            assert picked == 0
    assert (validation_part(train, labels, 0.2, fold=0) == val).all()  # deterministic
    assert not validation_part(train, labels, 0.0, fold=0).any()
    assert (validation_part(train, labels, 0.2, fold=1) != val).any()  # per fold


def test_fold_data_trains_without_the_validation_part(synthetic):
    cfg = tiny_config()
    whole = make_fold_data(synthetic, cfg)
    held = make_fold_data(synthetic, cfg.replace(val_fraction=0.25))
    assert whole.val is None
    n_train = int(whole.train.w.sum())
    n_val = int(held.val.w.sum())
    assert n_val > 0 and int(held.train.w.sum()) == n_train - n_val
    # the test split keeps its sequences (standardized by the smaller training split's stats)
    np.testing.assert_array_equal(held.test.y, whole.test.y)
    np.testing.assert_array_equal(held.test.w, whole.test.w)
    assert held.val.x.shape[2:] == whole.train.x.shape[2:]  # (fold, N, V, F)
    val_classes = np.unique(np.asarray(held.val.y)[np.asarray(held.val.w) > 0])
    assert val_classes.size == np.unique(np.asarray(whole.train.y)).size  # stratified
    with pytest.raises(ConfigError, match="val-fraction"):
        cfg.replace(val_fraction=1.0)


def test_val_accuracy_is_reported_and_cli_rejects_a_bad_fraction(synthetic, tmp_path):
    cfg = tiny_config().replace(val_fraction=0.2)
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    assert 0.0 <= result["val_accuracy"] <= 1.0 and result["val_fraction"] == 0.2
    assert "val_accuracy_monitor" in result["history"][-1]
    proc = gcnprune("train", "--dataset", "synthetic", "--val-fraction", "1.5", cwd=tmp_path)
    assert proc.returncode == 2 and "--val-fraction" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the zero-floor band-stop -------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0.005, 0.2, 0.5, 2.0])
def test_zero_floor_band_stop_is_zero_at_zero_and_keeps_its_limits(kappa):
    a = 0.3
    positive = jnp.linspace(0.0, 3.0, 301)
    x = jnp.concatenate([-positive[::-1], positive[1:]])  # exactly symmetric
    psi = band_stop(x, a, kappa * a, zero_floor=True)
    assert float(band_stop(0.0, a, kappa * a, zero_floor=True)) == 0.0
    assert float(psi.min()) >= 0.0 and float(psi.max()) <= 1.0
    half = np.asarray(psi[300:])  # x >= 0: monotone non-decreasing in |x|
    assert (np.diff(half) >= -1e-6).all()
    np.testing.assert_allclose(psi, psi[::-1], atol=1e-6)  # even
    # below the plain band-stop (its floor removed), equal in the limit τ → 0
    assert (psi <= band_stop(x, a, kappa * a) + 1e-6).all()
    plain = band_stop(0.0, a, kappa * a)
    assert float(plain) == pytest.approx(2 * float(jax.nn.sigmoid(-1 / kappa)), rel=1e-5)
    grad = jax.grad(lambda v: band_stop(v, a, kappa * a, zero_floor=True))(0.7)
    assert np.isfinite(float(grad))


def test_zero_floor_band_stop_tends_to_the_hard_mask():
    a, x = 0.3, jnp.asarray([0.0, 0.1, 0.29, 0.31, 0.6, -0.6, -0.1])
    psi = band_stop(x, a, 1e-4 * a, zero_floor=True)
    np.testing.assert_allclose(psi, (np.abs(np.asarray(x)) > a).astype(np.float32), atol=1e-6)


# --- the budget controller ----------------------------------------------------------------


def test_budget_control_term_is_zero_valued_and_pushes_the_threshold_the_right_way():
    n = 100
    over = {"w": jnp.full((n,), 0.5)}  # 50 kept against a target of 10 (r = 0.9)
    under = {"w": jnp.full((n,), 0.05)}  # 5 kept against 10

    def term(shift, masks):
        return budget_control_term(shift, masks, 0.9, step=0, total_steps=10, warmup=0.0)

    for masks, direction in ((over, -1.0), (under, 1.0)):
        value, grad = jax.value_and_grad(term)(jnp.float32(0.3), masks)
        assert float(value) == 0.0
        # descent moves θ against the gradient: up (prune more) when over budget
        assert np.sign(float(grad)) == direction and abs(float(grad)) == pytest.approx(1.0)
    # the factor itself passes no gradient back to θ
    assert float(jax.grad(lambda s: threshold_factor(s, 10.0))(0.2)) == 0.0
    assert float(threshold_factor(0.1, 10.0)) == pytest.approx(np.e)


@pytest.mark.parametrize("method", ["ctf", "ssp", "tcmp", "pmp"])
def test_controlled_methods_train_their_shift_and_export_exactly(method, synthetic, tmp_path):
    rate = 0.9
    floor = {} if method == "pmp" else {"zero_floor": True}
    cfg = _pruned(method, rate, budget_control=True, **floor)
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    assert result["params_kept"] == keep_count(result["params_total"], rate)
    assert 0.0 <= result["crisp_fraction"] <= 1.0
    run = Run(cfg, synthetic)
    assert run.trainer.objective.trainable_aux
    trained = run.initial_state.aux[1]
    assert "shift" in trained and float(trained["shift"][0]) == 0.0


# --- PMP's global prior -------------------------------------------------------------------


def test_global_prior_gives_one_threshold_for_the_whole_network(synthetic):
    run = Run(tiny_config(), synthetic)
    latent = jax.tree.map(lambda a: a[0], run.initial_state.latent)
    leaves = api.prunable_leaves(latent)
    per_tensor = pmp(scope="tensor").init(latent, jax.random.PRNGKey(0))
    pooled = pmp(scope="global").init(latent, jax.random.PRNGKey(0))
    assert len({float(s) for s in pooled.values()}) == 1
    assert len({float(s) for s in per_tensor.values()}) > 1
    flat = np.concatenate([np.ravel(w) for w in leaves.values()])
    assert float(next(iter(pooled.values()))) == pytest.approx(np.sqrt(np.mean(flat**2)), rel=1e-5)
    method = pmp(scope="global")
    ctx = api.MaskContext(jnp.asarray(0), jnp.asarray(10), jnp.asarray(0.9))
    penalty = method.penalty(latent, pooled, ctx, method.mask(latent, pooled, ctx))
    assert np.isfinite(float(penalty)) and float(penalty) > 0
    # one threshold a(r): a tensor of larger weights keeps a larger share
    a = float(threshold("gaussian", next(iter(pooled.values())), 0.9))
    kept = {n: float(np.mean(np.abs(np.asarray(w)) > a)) for n, w in leaves.items()}
    assert max(kept.values()) > min(kept.values())
    with pytest.raises(ConfigError, match="scope"):
        pmp(scope="layer")


# --- fine-tuning after the export -----------------------------------------------------------


def test_finetuned_run_fixes_the_exported_masks_and_resumes_bit_identically(synthetic, tmp_path):
    rate = 0.9
    cfg = _pruned("ctf", rate, epochs=8, chunk=2, finetune=0.5)
    run = Run(cfg, synthetic)
    assert run.finetune_epoch == 4
    assert run.trainer.total_steps == 4 * run.trainer.steps_per_epoch  # soft phase only
    assert (4, 6) in run.chunks(0)
    result = run_training(cfg, tmp_path / "a", dataset=synthetic)
    assert result["finetune_epoch"] == 4
    assert result["params_kept"] == keep_count(result["params_total"], rate)
    assert "soft_accuracy" not in result  # the soft masks are gone once fixed
    assert 0.0 <= result["crisp_fraction"] <= 1.0 and np.isfinite(result["soft_rate"])
    masks = dict(np.load(tmp_path / "a" / "masks.npz"))
    # resumed mid fine-tuning, the run restores the masks fixed at epoch 4 and ends identical
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    (b / "result.json").unlink()
    shutil.rmtree(b / "checkpoint" / "8")  # back to the epoch-6 checkpoint, mid fine-tuning
    resumed = run_training(cfg, b, dataset=synthetic, resume=True)
    assert resumed["params_digest"] == result["params_digest"]
    assert resumed["accuracy"] == result["accuracy"]
    assert resumed["soft_rate"] == result["soft_rate"]
    again = dict(np.load(b / "masks.npz"))
    assert all((again[k] == masks[k]).all() for k in masks)


def test_finetuned_checkpoint_evaluates_and_mrmp_refuses_finetuning(synthetic, tmp_path):
    from gcnprune_jax.runner import evaluate_checkpoint

    cfg = _pruned("pmp", 0.9, epochs=6, chunk=2, finetune=0.5)
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    again = evaluate_checkpoint(tmp_path / "run")
    for key in ("params_digest", "accuracy", "params_kept", "soft_rate", "crisp_fraction"):
        assert again[key] == result[key], key
    with pytest.raises(ConfigError, match="finetune"):
        _pruned("mrmp", 0.9, finetune=0.3)
    with pytest.raises(ConfigError, match="finetune"):
        PruningConfig(finetune=1.0)
    assert "finetune" in PruningConfig().fields_used("ctf")
    assert "prior_scope" in PruningConfig().fields_used("mrmp")


def test_crisp_fraction_counts_values_near_zero_or_one():
    masks = {"a": np.array([0.0, 1.0, 0.0005, 0.9995]), "b": np.array([0.5, 0.01])}
    assert crisp_fraction(masks) == pytest.approx(4 / 6)


def test_method_defaults_are_the_ones_chosen_on_validation():
    # experiments/results/tuning_{sbu,fpha}.md: chosen on validation data, never on test
    tcmp = default_config("synthetic", "tcmp").pruning
    assert tcmp.zero_floor and tcmp.budget_control and tcmp.finetune == 0.3
    pmp_defaults = default_config("synthetic", "pmp").pruning
    assert pmp_defaults.prior_scope == "global" and pmp_defaults.finetune == 0.5
    assert default_config("synthetic", "mrmp").pruning.prior_scope == "global"
    assert default_config("synthetic", "ssp").pruning.finetune == 0.3
    # the consistent export (docs/methods.md#consistent-export) for the methods it applies to
    for method in ("ctf", "pmp", "mrmp"):
        assert default_config("synthetic", method).pruning.consistent_export, method
    for method in ("ssp", "tcmp", "magnitude"):
        assert not default_config("synthetic", method).pruning.consistent_export, method


def test_exclude_turns_off_the_default_consistent_export_on_the_command_line():
    from gcnprune_jax.cli import build_parser, config_from_args

    parse = build_parser().parse_args
    base = ["prune", "--method", "ctf", "--rate", "0.9"]
    assert config_from_args(parse(base)).pruning.consistent_export
    cfg = config_from_args(parse([*base, "--exclude", "classifier/kernel"]))
    assert not cfg.pruning.consistent_export
    assert cfg.pruning.exclude == ("classifier/kernel",)
    with pytest.raises(ConfigError, match="no-consistent-export"):  # both asked for: an error
        config_from_args(parse([*base, "--exclude", "classifier/kernel", "--consistent-export"]))


def test_sharded_sweep_fixes_the_masks_of_finetuned_methods(synthetic):
    from gcnprune_jax.sharding import seed_configs, sweep

    cfg = _pruned("ctf", 0.9, epochs=4, chunk=2, finetune=0.5)
    result = sweep(seed_configs(cfg, [0, 1]), dataset=synthetic)
    for run, state in zip(result.runs, result.states, strict=True):
        assert run.in_finetune(state)
        export = run.export(state)
        kept = sum(int(m.sum()) for m in export.masks[0].values())
        assert kept == keep_count(sum(m.size for m in export.masks[0].values()), 0.9)
        # the masks the state holds are the ones its network ran on during fine-tuning
        masks = {n: np.asarray(m[0]) for n, m in state.aux.items()}
        assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) <= {0.0, 1.0}


@pytest.mark.parametrize("method", ["ctf", "pmp"])
def test_consistent_export_leaves_no_dangling_connection(method, synthetic, tmp_path):
    rate = 0.97
    result = run_training(
        _pruned(method, rate, epochs=4, consistent_export=True), tmp_path / "r", dataset=synthetic
    )
    assert result["dangling_connections"] == 0
    assert result["params_kept"] == keep_count(result["params_total"], rate)
    with pytest.raises(ConfigError, match="consistent-export"):
        _pruned("ssp", rate, consistent_export=True)
