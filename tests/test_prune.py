"""Pruned runs end to end: `gcnprune prune`, exact export, masks.npz, costs, resume across
the pruning epoch, and CTF's masks turning crisp while training (SPEC §0, §1, §6)."""

import json

import jax
import numpy as np
import pytest
from conftest import tiny_config
from test_cli import RESULT_KEYS, TINY, gcnprune

from gcnprune_jax.costs import dense_flops
from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import prunable_parameters
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.runner import Run, SilentReporter, run_training
from gcnprune_jax.topology import dangling_connections
from gcnprune_jax.train import Context


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(seed=0)


def pruned(method: str, rate: float, epochs: int = 8, **pruning):
    cfg = tiny_config(epochs=epochs, chunk_epochs=4)
    return cfg.replace(
        method=method,
        target_rate=rate,
        pruning=cfg.pruning.__class__(**{**cfg.pruning.__dict__, **pruning}),
    )


@pytest.mark.parametrize(
    "method", ["magnitude", "structured", "random", "snip", "ctf", "ssp", "tcmp", "pmp"]
)
def test_every_method_exports_exactly_the_target_rate(method, synthetic, tmp_path):
    rate = 0.937
    result = run_training(pruned(method, rate), tmp_path / "run", dataset=synthetic)
    assert set(result) >= RESULT_KEYS
    total = result["params_total"]
    assert result["params_kept"] == keep_count(total, rate)
    assert result["realized_rate"] == pytest.approx(1 - keep_count(total, rate) / total)
    masks = dict(np.load(tmp_path / "run" / "masks.npz"))
    run = Run(pruned(method, rate), synthetic)
    one_fold = jax.tree.map(lambda a: a[0], run.initial_state.latent)
    shapes = prunable_parameters(one_fold)
    assert {k: v.shape for k, v in masks.items()} == shapes
    assert all(m.dtype == bool for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == result["params_kept"]
    assert result["dangling_connections"] == dangling_connections(
        masks, run.cfg.model, n_nodes=synthetic.n_nodes
    )
    assert result["flops_unstructured"] < result["flops_dense"]
    assert result["flops_dense"] == dense_flops(run.cfg.model, **run.model_dims)
    if method in ("magnitude", "structured", "random", "snip"):
        assert result["soft_rate"] == result["realized_rate"] and result["rounding_changed"] == 0
    if method == "tcmp":  # SPEC §3's guarantee, checked by hard propagation
        assert result["dangling_connections"] == 0
    if method == "ssp":  # SPEC §2: each channel has the structure its gate chose
        from gcnprune_jax.pruning.ssp import check_structure

        assert set(result["granularity"]) == set(masks)
        for name, mask in masks.items():
            assert check_structure(mask, result["granularity"][name]) == []


def test_magnitude_prunes_after_the_dense_phase_and_keeps_the_largest(synthetic, tmp_path):
    cfg = pruned("magnitude", 0.8, epochs=8, prune_at=0.5)
    run = Run(cfg, synthetic)
    assert run.prune_epoch == 4
    assert [c for c in run.chunks(0)] == [(0, 4), (4, 8)]
    state, _ = run.trainer.train_chunk(run.initial_state, run.data, 4)
    pruned_state = run.prune(state)
    latent = jax.tree.map(lambda a: np.asarray(a[0]), state.latent)
    from gcnprune_jax.pruning.api import prunable_leaves

    leaves = prunable_leaves(latent)
    aux = {n: np.asarray(m[0]) for n, m in pruned_state.aux.items()}
    kept = np.concatenate([np.abs(leaves[n][aux[n] > 0.5]) for n in leaves])
    gone = np.concatenate([np.abs(leaves[n][aux[n] < 0.5]) for n in leaves])
    assert kept.min() >= gone.max()
    # fine-tuning restarts the optimizer, and pruned weights get no gradient
    after, _ = run.trainer.train_chunk(pruned_state, run.data, 4)
    latent_after = prunable_leaves(jax.tree.map(lambda a: np.asarray(a[0]), after.latent))
    for n in leaves:
        np.testing.assert_array_equal(latent_after[n][aux[n] < 0.5], leaves[n][aux[n] < 0.5])


class _StopAfter(SilentReporter):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def update(self, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["magnitude", "ctf", "ssp"])
def test_resume_across_the_pruning_epoch_gives_the_same_result(method, synthetic, tmp_path):
    cfg = pruned(method, 0.9, epochs=8)
    full = run_training(cfg, tmp_path / "full", dataset=synthetic)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "cut", dataset=synthetic, reporter=_StopAfter(4))
    resumed = run_training(cfg, tmp_path / "cut", dataset=synthetic, resume=True)
    assert resumed["params_digest"] == full["params_digest"]
    assert resumed["accuracy"] == full["accuracy"]
    a, b = np.load(tmp_path / "full" / "masks.npz"), np.load(tmp_path / "cut" / "masks.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_ctf_masks_turn_crisp_and_meet_the_budget(synthetic):
    cfg = pruned("ctf", 0.9, epochs=150)
    run = Run(cfg, synthetic)
    state, _ = run.trainer.train_chunk(run.initial_state, run.data, cfg.train.epochs)
    export = run.export(state)
    soft = jax.device_get(
        jax.vmap(lambda lat, aux: run.method.mask(lat, aux, _final_ctx(run, state)))(
            state.latent, state.aux
        )
    )
    values = np.concatenate([np.ravel(m) for m in soft.values()])
    crisp = np.mean((values < 1e-3) | (values > 1 - 1e-3))
    assert crisp > 0.99, crisp
    assert abs(export.soft_rates[0] - 0.9) < 0.02
    assert export.rounding_changed[0] < 0.01 * values.size


def _final_ctx(run, state):
    from gcnprune_jax.pruning.api import MaskContext
    from gcnprune_jax.train import Context

    ctx = Context(state.step[0], run.trainer.total_steps)
    return MaskContext.from_train(ctx, run.cfg.target_rate)


def test_ctf_train_step_traces_once_and_agrees_with_eager(synthetic):
    run = Run(pruned("ctf", 0.9, epochs=8), synthetic)
    state = run.initial_state
    for _ in range(3):
        state, _metrics = run.trainer.train_chunk(state, run.data, 2)
    assert run.trainer.trace_count == 1
    jitted, jm = run.trainer.train_chunk(run.initial_state, run.data, 2)
    with jax.disable_jit():
        eager, em = run.trainer._train_chunk(run.initial_state, run.data, 2)
    np.testing.assert_allclose(jm["loss"], em["loss"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(jitted.latent), jax.tree.leaves(eager.latent), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_or_misused_method_is_a_config_error():
    with pytest.raises(ConfigError, match="--method"):
        tiny_config().replace(method="lottery", target_rate=0.5)
    with pytest.raises(ConfigError, match="dense"):
        tiny_config().replace(method="dense", target_rate=0.5)


def test_prune_cli_writes_result_masks_and_eval_reproduces(tmp_path):
    out = tmp_path / "run"
    args = ["--method", "magnitude", "--rate", "0.95", "--epochs", "4", "--chunk-epochs", "2"]
    proc = gcnprune("prune", *args, *TINY, "--out", str(out), check=True)
    assert "realized rate 0.9499" in proc.stdout  # 117 of 2336 kept
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "magnitude" and result["target_rate"] == 0.95
    assert result["config"]["pruning"]["scope"] == "global"
    assert (out / "masks.npz").is_file()
    evaluated = json.loads(gcnprune("eval", "--checkpoint", str(out), check=True).stdout)
    assert evaluated["accuracy"] == result["accuracy"]
    assert evaluated["params_digest"] == result["params_digest"]
    assert evaluated["params_kept"] == result["params_kept"]
    proc = gcnprune("eval", "--checkpoint", str(out), "--rate", "0.5")
    assert proc.returncode == 2 and "mrmp" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "magnitude", "--rate", "1.2"], "--rate must be in [0, 1)"),
        (["--method", "magnitude", "--rate", "-0.1"], "--rate must be in [0, 1)"),
        (["--method", "magnitude", "--rate", "1"], "--rate must be in [0, 1)"),
        (["--method", "lottery", "--rate", "0.5"], "--method must be one of"),
        (["--method", "ssp", "--rate", "0.5", "--gate-tau-end", "2"], "--gate-tau-end"),
        (["--method", "ssp", "--rate", "0.5", "--rank-beta", "-1"], "--rank-beta"),
        (["--method", "ctf", "--rate", "0.5", "--granularities", "block"], "--granularities"),
        (["--method", "ctf", "--rate", "0.5", "--kappa-end", "0"], "--kappa-end"),
        (["--method", "magnitude", "--rate", "0.5", "--prune-at", "1"], "--prune-at"),
    ],
)
def test_bad_prune_options_exit_2(tmp_path, args, expected):
    proc = gcnprune("prune", *args, "--epochs", "2", *TINY, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_mrmp_trains_all_rates_at_once_and_serves_unseen_rates(synthetic, tmp_path):
    cfg = pruned("mrmp", 0.9, epochs=4, rates=(0.5, 0.9, 0.98))
    run = Run(cfg, synthetic)
    assert run.trainer.objective.n_rates == 3
    effective = run.trainer.objective.transform(
        jax.tree.map(lambda a: a[0], run.initial_state.latent),
        jax.tree.map(lambda a: a[0], run.initial_state.aux),
        Context(jax.numpy.int32(0), jax.numpy.int32(run.trainer.total_steps)),
    )
    assert effective["fc0"]["kernel"].shape[0] == 3  # one network per training rate
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    assert result["trained_rates"] == [0.5, 0.9, 0.98]
    from gcnprune_jax.runner import evaluate_checkpoint

    for rate in (0.8, 0.93, 0.97):  # never trained
        evaluated = evaluate_checkpoint(tmp_path / "run", rate=rate)
        total = evaluated["params_total"]
        assert evaluated["params_kept"] == keep_count(total, rate)
        assert evaluated["params_digest"] == result["params_digest"]  # no retraining
    with pytest.raises(ConfigError, match=r"--rate must be in \[0, 1\)"):
        evaluate_checkpoint(tmp_path / "run", rate=1.5)
