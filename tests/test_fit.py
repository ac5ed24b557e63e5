"""`fit.prune`: any method on a model of one's own through the compiled train step, with no
Run and no fold axis; the crisp masks at exactly the target rate."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax import fit
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.train import Split, TrainConfig, Trainer, params_digest, stack_trees


def _data(n=240, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, features))
    y = rng.integers(0, classes, n)
    x = (centers[y] + 0.7 * rng.normal(size=(n, features))).astype(np.float32)
    return x, y


def _mlp(features=12, hidden=32, classes=3):
    k0, k1, k2 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "layers": [
            {
                "kernel": jax.random.normal(k0, (features, hidden)) / features**0.5,
                "bias": jnp.zeros(hidden),
            },
            {
                "kernel": jax.random.normal(k1, (hidden, hidden)) / hidden**0.5,
                "bias": jnp.zeros(hidden),
            },
        ],
        "head": {
            "kernel": jax.random.normal(k2, (hidden, classes)) / hidden**0.5,
            "bias": jnp.zeros(classes),
        },
    }

    def apply(p, x):
        for layer in p["layers"]:
            x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        return x @ p["head"]["kernel"] + p["head"]["bias"]

    return apply, params


def _select(path, leaf):
    return leaf.ndim >= 2


@pytest.mark.parametrize(
    ("method", "export_epoch"),
    [("pmp", 10), ("magnitude", 10), ("random", 0), ("dense", None)],
)
def test_every_schedule_exports_exactly_the_rate_on_a_users_mlp(method, export_epoch):
    apply, params = _mlp()
    x, y = _data()
    rate = 0.8
    pruned = fit.prune(
        apply,
        params,
        method,
        rate,
        (x[:180], y[:180]),
        val=(x[180:], y[180:]),
        epochs=20,
        train_config=TrainConfig(chunk_epochs=10),
        select=_select,
    )
    leaves = api.prunable_leaves(params, _select)
    assert set(pruned.masks) == set(leaves) == {"layers/0/kernel", "layers/1/kernel", "head/kernel"}
    kept = sum(int(m.sum()) for m in pruned.masks.values())
    total = sum(m.size for m in pruned.masks.values())
    if method == "dense":
        assert kept == total and pruned.realized_rate == 0.0
    else:
        assert kept == keep_count(total, rate)
    assert pruned.export_epoch == export_epoch
    # the pruned params are the latent ones where kept, 0 where pruned; other leaves untouched
    for name, mask in pruned.masks.items():
        w = np.asarray(api.prunable_leaves(pruned.params, _select)[name])
        latent = np.asarray(api.prunable_leaves(pruned.latent, _select)[name])
        np.testing.assert_array_equal(w, np.where(mask, latent, 0.0))
    np.testing.assert_array_equal(pruned.params["head"]["bias"], pruned.latent["head"]["bias"])
    assert [r["epoch"] for r in pruned.history] == [10, 20]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in pruned.history)
    if method == "pmp":  # learned: how far the soft masks were from the export
        assert 0.0 <= pruned.soft_rate <= 1.0 and pruned.rounding_changed >= 0
        assert 0.0 <= pruned.crisp_fraction <= 1.0
    logits = apply(pruned.params, jnp.asarray(x))
    assert logits.shape == (len(x), 3) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("method", ["magnitude", "pmp"])
def test_a_users_apply_is_traced_per_program_not_per_epoch(method):
    """More epochs in chunks of the same length reuse the compiled programs: a user's `apply`
    is traced as often for 60 epochs as for 20 (chex.assert_max_traces raises otherwise)."""
    apply, params = _mlp()
    x, y = _data()
    options = dict(
        val=(x[180:], y[180:]), train_config=TrainConfig(chunk_epochs=10), select=_select
    )
    traces = []

    def counted(p, xb):
        traces.append(None)
        return apply(p, xb)

    fit.prune(counted, params, method, 0.8, (x[:180], y[:180]), epochs=20, **options)
    assert 0 < len(traces) <= 6  # a few programs (train chunks and evaluations), not 2 x 10
    chex.clear_trace_counter()
    bounded = chex.assert_max_traces(apply, n=len(traces))
    fit.prune(bounded, params, method, 0.8, (x[:180], y[:180]), epochs=60, **options)


def test_same_inputs_same_result_and_masks_round_trip(tmp_path):
    apply, params = _mlp()
    x, y = _data()
    runs = [
        fit.prune(apply, params, "magnitude", 0.9, (x, y), epochs=6, select=_select)
        for _ in range(2)
    ]
    assert params_digest(runs[0].latent) == params_digest(runs[1].latent)
    path = runs[0].save_masks(tmp_path / "masks.npz")
    with np.load(path) as saved:
        assert set(saved) == set(runs[0].masks)
        for name in saved:
            np.testing.assert_array_equal(saved[name], runs[0].masks[name])


def _trainer_setup(method_name, epochs):
    """A user's MLP with Trainer's call convention, a 64-sample split, a method at 0.8."""
    apply, params = _mlp()
    x, y = _data(n=64)
    split = Split(jnp.asarray(x), jnp.asarray(y), jnp.ones(len(y), jnp.float32))
    method = api.get(method_name, select=_select)
    cfg = TrainConfig(epochs=epochs, chunk_epochs=epochs)
    apply3 = lambda p, xb, key=None: apply(p, xb)  # noqa: E731
    return params, split, method, cfg, apply3, api.to_objective(method, 0.8)


def test_trainer_without_fold_axis_matches_one_stacked_fold():
    params, split, method, cfg, apply3, objective = _trainer_setup("ctf", 5)
    n = len(split.y)
    one = Trainer(apply3, cfg, objective, n_train=n, fold_axis=False)
    stacked = Trainer(apply3, cfg, objective, n_train=n)
    state = one.init_state(
        params, method.init(params, jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    )
    single, _ = one.train_chunk(state, split, 5)
    folded, _ = stacked.train_chunk(stack_trees([state]), jax.tree.map(lambda a: a[None], split), 5)
    for a, b in zip(jax.tree.leaves(single.latent), jax.tree.leaves(folded.latent), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[0], rtol=1e-5, atol=1e-6)
    assert float(one.evaluate(single, split)["accuracy"]) == pytest.approx(
        float(stacked.evaluate(folded, jax.tree.map(lambda a: a[None], split))["accuracy"][0])
    )


def test_clear_errors():
    apply, params = _mlp()
    x, y = _data(n=30)
    renamed = {"w": params["head"]["kernel"]}  # the default select knows the GCN's names
    with pytest.raises(ConfigError, match="no leaf of params is selected"):
        fit.prune(lambda p, x: x @ p["w"], renamed, "magnitude", 0.5, (x, y), epochs=4)
    with pytest.raises(ConfigError, match="TCMP"):
        fit.prune(apply, params, "tcmp", 0.5, (x, y), epochs=4, select=_select)
    with pytest.raises(ConfigError, match=r"y shape"):
        fit.prune(apply, params, "magnitude", 0.5, (x, y[:10]), epochs=4, select=_select)
    with pytest.raises(ConfigError, match="target_rate"):
        fit.prune(apply, params, "magnitude", 1.0, (x, y), epochs=4, select=_select)
    with pytest.raises(ConfigError, match="finetune=0 with mrmp"):
        fit.prune(apply, params, "mrmp", 0.5, (x, y), epochs=4, select=_select, finetune=0.3)
    with pytest.raises(ConfigError, match="by name"):
        fit.prune(apply, params, api.get("mrmp", select=_select), 0.5, (x, y), epochs=4)


def test_mrmp_trains_once_and_serves_any_rate_exactly():
    """One multi-rate training (rates 0.5 and 0.9), exported at 0.9 and served at 0.7 and 0.95
    without retraining: exact counts, the same latent weights, larger rates keep fewer."""
    apply, params = _mlp()
    x, y = _data()
    pruned = fit.prune(
        apply,
        params,
        "mrmp",
        0.9,
        (x[:180], y[:180]),
        val=(x[180:], y[180:]),
        epochs=20,
        rates=(0.5, 0.9),
        select=_select,
    )
    total = sum(m.size for m in pruned.masks.values())
    assert pruned.export_epoch == 20 and pruned.soft_rate is not None
    assert sum(int(m.sum()) for m in pruned.masks.values()) == keep_count(total, 0.9)
    kept = {}
    for rate in (0.7, 0.9, 0.95):
        served = pruned.serve(rate)
        kept[rate] = sum(int(m.sum()) for m in served.masks.values())
        assert kept[rate] == keep_count(total, rate) and served.target_rate == rate
        assert served.latent is pruned.latent
    for name, mask in pruned.serve(0.9).masks.items():
        np.testing.assert_array_equal(mask, pruned.masks[name])
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in pruned.history)
    magnitude = fit.prune(apply, params, "magnitude", 0.9, (x, y), epochs=4, select=_select)
    assert magnitude.serve is None


def test_python_epoch_loop_matches_the_scan():
    """epoch_loop="python" (one compiled epoch per call, for convolutions on XLA:CPU) trains
    the same network as the compiled chunk, with the same metrics layout."""
    params, split, method, cfg, apply3, objective = _trainer_setup("magnitude", 4)
    n = len(split.y)
    runs = {}
    for loop in ("scan", "python"):
        trainer = Trainer(apply3, cfg, objective, n_train=n, fold_axis=False, epoch_loop=loop)
        state = trainer.init_state(params, method.init(params, None), jax.random.PRNGKey(2))
        runs[loop] = trainer.train_chunk(state, split, 4)
    for a, b in zip(*(jax.tree.leaves(runs[k][0].latent) for k in runs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert {k: v.shape for k, v in runs["python"][1].items()} == {
        k: v.shape for k, v in runs["scan"][1].items()
    }
    with pytest.raises(ValueError, match="epoch_loop"):
        Trainer(apply3, cfg, objective, n_train=n, epoch_loop="unrolled")


def test_convolutional_models_get_the_python_epoch_loop_on_cpu():
    def conv_apply(p, x):  # x (B, T, C): a temporal convolution, then a mean and a classifier
        h = jax.lax.conv_general_dilated(
            x, p["conv"], (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
        )
        return jax.nn.relu(h).mean(axis=1) @ p["head"]

    params = {"conv": jnp.ones((3, 4, 8)) * 0.1, "head": jnp.ones((8, 3)) * 0.1}
    x = jnp.ones((2, 10, 4))
    assert fit._has_convolution(conv_apply, params, x)
    apply, mlp = _mlp()
    assert not fit._has_convolution(apply, mlp, jnp.ones((2, 12)))


def test_a_soft_phase_that_does_not_learn_is_reported():
    """A penalty that outweighs the cross-entropy (here CTF's budget at lam=1e7) leaves the
    training loss where it started: fit.prune says so instead of returning silently."""
    apply, params = _mlp()
    x, y = _data()
    with pytest.warns(fit.StallWarning, match="lam="):
        fit.prune(apply, params, "ctf", 0.9, (x, y), epochs=40, select=_select, lam=1e7)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fit.StallWarning)
        fit.prune(apply, params, "ctf", 0.9, (x, y), epochs=40, select=_select, lam=1.0)


def test_choose_scores_every_setting_on_validation_and_refits_the_best():
    apply, params = _mlp()
    x, y = _data(n=300)
    train, val = (x[:180], y[:180]), (x[180:240], y[180:240])
    options = {"epochs": 20, "train_config": TrainConfig(chunk_epochs=10), "select": _select}
    seen = []
    choice = fit.choose(
        apply,
        params,
        "ctf",
        0.8,
        train,
        val,
        {"lam": [1e5, 1.0]},
        progress=seen.append,
        **options,
    )
    assert [t["lam"] for t in choice.trials] == [1e5, 1.0] and seen == choice.trials
    # each trial's score is its own pruned network's validation accuracy
    for trial in choice.trials:
        alone = fit.prune(apply, params, "ctf", 0.8, train, lam=trial["lam"], **options)
        assert trial["val_accuracy"] == fit.accuracy(apply, alone.params, val)
        assert trial["realized_rate"] == alone.realized_rate
    scores = [t["val_accuracy"] for t in choice.trials]
    assert choice.settings == {"lam": choice.trials[int(np.argmax(scores))]["lam"]}
    # the refit trains the chosen setting on train + val together
    joined = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    refit = fit.prune(apply, params, "ctf", 0.8, joined, **choice.settings, **options)
    assert params_digest(choice.pruned.params) == params_digest(refit.params)
    kept = sum(int(m.sum()) for m in choice.pruned.masks.values())
    assert kept == keep_count(sum(m.size for m in choice.pruned.masks.values()), 0.8)
    # without refit, the chosen trial's own network comes back
    again = fit.choose(
        apply, params, "ctf", 0.8, train, val, {"lam": [1.0]}, refit=False, **options
    )
    assert again.trials[0]["val_accuracy"] == fit.accuracy(apply, again.pruned.params, val)


def test_choose_clear_errors():
    apply, params = _mlp()
    x, y = _data()
    data = (x[:100], y[:100])
    with pytest.raises(ConfigError, match="non-empty lists"):
        fit.choose(apply, params, "ctf", 0.8, data, data, {"lam": []}, select=_select)
    with pytest.raises(ConfigError, match="both in grid"):
        fit.choose(apply, params, "ctf", 0.8, data, data, {"lam": [1.0]}, lam=2.0)
