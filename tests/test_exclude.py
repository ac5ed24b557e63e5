"""pruning.exclude: prunable tensors kept dense and out of the budget (docs/methods.md, "The
budget without the classifier"), through the runner's baseline, learned and fine-tuning paths."""

import jax
import numpy as np
import pytest
from test_prune import pruned

from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import prunable_parameters
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.runner import Run, run_training


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(seed=0)


@pytest.mark.parametrize(
    ("method", "extra"),
    [("magnitude", {}), ("snip", {}), ("ctf", {"finetune": 0.25})],
)
def test_excluded_tensors_stay_dense_and_out_of_the_budget(method, extra, synthetic, tmp_path):
    """pruning.exclude (CTF's published budget sums over every layer but the classifier): the rate
    applies to the other prunable tensors, the excluded one is kept whole."""
    rate, excluded = 0.9, "classifier/kernel"
    cfg = pruned(method, rate, exclude=(excluded,), **extra)
    result = run_training(cfg, tmp_path / "run", dataset=synthetic)
    masks = dict(np.load(tmp_path / "run" / "masks.npz"))
    run = Run(cfg, synthetic)
    shapes = prunable_parameters(jax.tree.map(lambda a: a[0], run.initial_state.latent))
    assert {k: v.shape for k, v in masks.items()} == shapes  # every prunable tensor, as before
    assert masks[excluded].all()
    budgeted = sum(int(np.prod(s)) for n, s in shapes.items() if n != excluded)
    kept = sum(int(m.sum()) for n, m in masks.items() if n != excluded)
    assert kept == keep_count(budgeted, rate)
    assert result["params_kept"] == kept + masks[excluded].size
    assert result["realized_rate"] < rate
    assert list(result["config"]["pruning"]["exclude"]) == [excluded]


def test_exclude_errors(synthetic):
    with pytest.raises(ConfigError, match="tcmp"):
        pruned("tcmp", 0.9, exclude=("classifier/kernel",))
    with pytest.raises(ConfigError, match="a list of parameter paths"):
        pruned("ctf", 0.9, exclude="classifier/kernel")
    with pytest.raises(ConfigError, match="consistent export"):
        pruned("ctf", 0.9, exclude=("classifier/kernel",), consistent_export=True)
    pruned("magnitude", 0.9, exclude=("classifier/kernel",), consistent_export=True)  # unused
    with pytest.raises(ConfigError, match="not prunable tensors"):
        Run(pruned("ctf", 0.9, exclude=("classifier/bias",)), synthetic)
