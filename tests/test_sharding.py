"""Sharded sweeps (gcnprune_jax.sharding): same numbers on 4 devices, 1 device and alone.

The device count is fixed when JAX starts, so the multi-device checks run in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (4 CPU "devices").
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.runner import Run
from gcnprune_jax.sharding import (
    device_mesh,
    pad_leading,
    seed_configs,
    shard_leading,
    split_leading,
    stack_runs,
    sweep,
)

REPO = Path(__file__).resolve().parents[1]

# What we got: NOT bit-identical, allclose. A vmapped batch of 4 on one device, of 1 per device
# in the partitioned program and of 1 alone compile to differently batched dots, so gradients
# differ in the last bits (max |diff| about 3e-8 after 4 epochs; the 4-device first-step loss
# and test forward pass equal the run alone bit for bit). Masks and test accuracies are equal;
# parameters agree to this tolerance.
RTOL, ATOL = 1e-5, 1e-6

SCRIPT = r"""
import json
import jax
import numpy as np
from conftest import tiny_config
from gcnprune_jax.data.synthetic import make_synthetic
from gcnprune_jax.runner import Run
from gcnprune_jax.sharding import device_mesh, seed_configs, stack_runs, sweep

RTOL, ATOL = {rtol}, {atol}
report = {{"n_devices": len(jax.devices())}}
assert len(jax.devices()) == 4, jax.devices()


def close(a, b, what):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb), what
    identical = True
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (what, x.shape, y.shape)
        identical &= bool(np.array_equal(x, y))
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=what)
    return identical


def alone(run):
    # the normal Run path (run_training's loop without checkpoints)
    state = run.initial_state
    for first, last in run.chunks(0):
        state, _ = run.trainer.train_chunk(state, run.data, last - first)
        if last == run.prune_epoch:
            state = run.prune(state)
    return state, np.asarray(run.trainer.evaluate(state, run.data.test)["accuracy"])


def check(name, runs):
    mesh4, mesh1 = device_mesh(), device_mesh(jax.devices()[:1])
    stacked = stack_runs(runs, mesh4)
    n_pad = jax.tree.leaves(stacked.state)[0].shape[0]
    assert n_pad % 4 == 0 and n_pad > stacked.n_real, (n_pad, stacked.n_real)
    for leaf in jax.tree.leaves((stacked.state, stacked.data)):
        assert len(leaf.sharding.device_set) == 4, leaf.sharding
        shards = leaf.addressable_shards
        assert len({{s.device for s in shards}}) == 4
        assert all(s.data.shape[0] == n_pad // 4 for s in shards)
    # jit keeps the vmapped program partitioned: its outputs are spread over the 4 devices too
    out, _ = runs[0].trainer.train_chunk(stacked.state, stacked.data, 2)
    assert all(len(leaf.sharding.device_set) == 4 for leaf in jax.tree.leaves(out))

    four, one = sweep(runs, mesh=mesh4), sweep(runs, mesh=mesh1)
    assert len(four.states) == len(runs)  # padded entries dropped
    result = {{"n_real": stacked.n_real, "n_padded": n_pad}}
    identical_1dev, identical_alone = True, True
    for i, run in enumerate(runs):
        identical_1dev &= close(four.states[i], one.states[i], f"{{name}} run {{i}}: 4 vs 1 device")
        state, acc = alone(run)
        identical_alone &= close(four.states[i], state, f"{{name}} run {{i}}: sweep vs alone")
        for m4, m in zip(jax.tree.leaves(four.states[i].aux), jax.tree.leaves(state.aux)):
            np.testing.assert_array_equal(m4, np.asarray(m))  # same masks
        # equal here; one test sample may flip elsewhere with last-bit differences
        n_test = max(float(np.asarray(run.data.test.w).sum(axis=1).min()), 1.0)
        np.testing.assert_allclose(four.test_accuracy[i], acc, atol=1.01 / n_test)
        np.testing.assert_allclose(four.test_accuracy[i], one.test_accuracy[i], atol=1.01 / n_test)
        result.setdefault("accuracy", []).append(four.test_accuracy[i].tolist())
        assert four.metrics[i]["loss"].shape == (len(run.cfg.folds), run.cfg.train.epochs)
    # seeds differ, so the runs are not copies of one another
    assert not np.array_equal(jax.tree.leaves(four.states[0].latent)[0],
                              jax.tree.leaves(four.states[1].latent)[0])
    result.update(identical_1dev=identical_1dev, identical_alone=identical_alone)
    report[name] = result


ds = make_synthetic(seed=0)
# magnitude: dense training, pruning at epoch 2 (per run, on the host), fine-tuning; 3 seeds
# pad to 4
cfg = tiny_config(epochs=4, chunk_epochs=2).replace(method="magnitude", target_rate=0.5)
check("magnitude_3_seeds", [Run(c, ds) for c in seed_configs(cfg, [0, 1, 2])])
# a multi-fold dataset (SBU's 5 folds on synthetic data): 2 seeds x 5 folds pad to 12
ds5 = type(ds)(**{{**ds.__dict__, "name": "sbu", "groups": np.arange(len(ds)) % 5}})
cfg5 = tiny_config(epochs=2, chunk_epochs=2).replace(dataset="sbu")
check("dense_2_seeds_5_folds", [Run(c, ds5) for c in seed_configs(cfg5, [0, 3])])
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(seed=0)


def test_sweep_on_4_devices_matches_one_device_and_single_runs(tmp_path):
    script = tmp_path / "sweep4.py"
    script.write_text(SCRIPT.format(rtol=RTOL, atol=ATOL))
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # the repo root for gcnprune_jax, tests/ for tiny_config
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert report["n_devices"] == 4
    assert report["magnitude_3_seeds"]["n_real"] == 3
    assert report["magnitude_3_seeds"]["n_padded"] == 4
    assert report["dense_2_seeds_5_folds"]["n_real"] == 10
    assert report["dense_2_seeds_5_folds"]["n_padded"] == 12


def test_pad_leading_repeats_the_last_entry_and_split_drops_it():
    tree = {"a": np.arange(6).reshape(3, 2), "b": (np.arange(3.0),)}
    padded, n = pad_leading(tree, 4)
    assert n == 3
    np.testing.assert_array_equal(padded["a"], [[0, 1], [2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["b"][0], [0.0, 1.0, 2.0, 2.0])
    same, n = pad_leading(tree, 3)
    assert n == 3 and same["a"].shape == (3, 2)
    first, second = split_leading(padded, [1, 2])
    np.testing.assert_array_equal(first["a"], [[0, 1]])
    np.testing.assert_array_equal(second["b"][0], [1.0, 2.0])
    with pytest.raises(ValueError, match="leading size"):
        pad_leading({"a": np.zeros(3), "b": np.zeros(2)}, 2)


def test_shard_leading_on_the_visible_devices():
    mesh = device_mesh()
    d = mesh.devices.size
    assert mesh.axis_names == ("runs",) and d == len(jax.devices())
    tree, _ = pad_leading({"x": np.arange(3.0)[:, None] * np.ones((3, 5))}, d)
    sharded = shard_leading(tree, mesh)
    assert len(sharded["x"].sharding.device_set) == d
    np.testing.assert_array_equal(np.asarray(sharded["x"]), tree["x"])
    if d > 1:
        with pytest.raises(ValueError, match="multiple"):
            shard_leading({"x": np.zeros((d + 1, 2))}, mesh)


def test_sweep_with_the_visible_devices_matches_runs_alone(synthetic):
    """Works whatever the device count is (one CPU device in the test process)."""
    cfg = tiny_config(epochs=2, chunk_epochs=2)
    result = sweep(seed_configs(cfg, [0, 1]), dataset=synthetic)
    assert [r.cfg.seed for r in result.runs] == [0, 1]
    for run, state, acc in zip(result.runs, result.states, result.test_accuracy, strict=True):
        alone, _ = run.trainer.train_chunk(run.initial_state, run.data, 2)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(alone), strict=True):
            assert isinstance(a, np.ndarray) and a.shape == np.shape(b)
            np.testing.assert_allclose(a, np.asarray(b), rtol=RTOL, atol=ATOL)
        assert acc.shape == (1,) and 0.0 <= acc[0] <= 1.0


def test_sweep_refuses_runs_of_different_configurations(synthetic):
    cfg = tiny_config(epochs=2, chunk_epochs=2)
    other = cfg.replace(method="magnitude", target_rate=0.5)
    with pytest.raises(ConfigError, match=r"method: 'dense' vs 'magnitude'.*target_rate"):
        sweep([cfg, other], dataset=synthetic)
    # same configuration apart from the fold, but other data sizes: named by the leaf
    ds5 = type(synthetic)(
        **{**synthetic.__dict__, "name": "sbu", "groups": np.arange(len(synthetic)) % 3}
    )
    sbu = cfg.replace(dataset="sbu")
    runs = [Run(sbu.replace(fold="1"), ds5), Run(sbu, ds5)]
    with pytest.raises(ConfigError, match=r"data.*train.*x.*shape"):
        stack_runs(runs, device_mesh())
