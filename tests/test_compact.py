"""Compaction, `gcnprune export` and `gcnprune bench` (SPEC §8): the compacted network has
the masked network's logits, is smaller where the masks have structure, and round-trips
through its saved form."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import TINY, gcnprune

from gcnprune_jax.bench import PATHS
from gcnprune_jax.compact import (
    apply_compact,
    compact,
    compact_flops,
    load_compact,
    with_layouts,
)
from gcnprune_jax.costs import dense_flops, flops_structured
from gcnprune_jax.models.gcn import GCNConfig, build_gcn, prunable_parameters
from gcnprune_jax.pruning.api import apply_masks, prunable_leaves

V, F, K = 6, 5, 4


def _adjacency(n):
    a = np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    return a / a.sum(1, keepdims=True)


def _model(attention, filters, key=1):
    cfg = GCNConfig(heads=3, filters=filters, attention_dim=4, fc=(7, 5), attention=attention)
    apply, params = build_gcn(
        cfg, n_nodes=V, n_features=F, n_classes=K, adjacency=_adjacency(V), key=jax.random.key(key)
    )
    # non-zero biases, so folding constant units into the next bias is exercised
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)
    return cfg, apply, params


def _masked_logits(apply, params, masks, x):
    return apply(apply_masks(params, {n: jnp.asarray(m, jnp.float32) for n, m in masks.items()}), x)


_jit_apply = jax.jit(apply_compact, static_argnums=0)


def _relative(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize(
    ("attention", "filters"),
    [
        ("neighbours", (4,)),
        ("softmax+adjacency", (3, 4)),
        ("mean", (4,)),
    ],
)
def test_compacted_network_has_the_masked_networks_logits(attention, filters):
    # compiled once per compacted layout instead of op by op (the same arithmetic)
    cfg, apply, params = _model(attention, filters)
    shapes = prunable_parameters(params)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(9, V, F)), jnp.float32)
    for _ in range(3):
        rate = rng.choice([0.3, 0.6, 0.9])
        masks = {}
        for name, shape in shapes.items():
            m = rng.random(shape) > rate
            if len(shape) == 3 and rng.random() < 0.5:
                m[rng.integers(shape[0])] = False  # a whole head
            if rng.random() < 0.5:
                m[..., rng.integers(shape[-1])] = False  # an output column
            masks[name] = m
        reference = _masked_logits(apply, params, masks, x)
        net = compact(params, masks, cfg, adjacency=_adjacency(V))
        assert _relative(_jit_apply(net.spec, net.params, x, _adjacency(V)), reference) < 1e-5
        sparse_net = with_layouts(net, ("bcoo",) * 3)
        out = _jit_apply(sparse_net.spec, sparse_net.params, x, _adjacency(V))
        assert _relative(out, reference) < 1e-5
        full = compact(params, masks, cfg, adjacency=_adjacency(V), remove=False)
        assert full.params["fc0"]["kernel"].shape == params["fc0"]["kernel"].shape
        assert _relative(_jit_apply(full.spec, full.params, x, _adjacency(V)), reference) < 1e-5
        assert compact_flops(net, V) <= compact_flops(full, V)
        if len(filters) == 1:  # no zero rows, no padded heads: exactly the structured count
            assert compact_flops(net, V) == flops_structured(
                masks, cfg, n_nodes=V, n_features=F, n_classes=K
            )
        # a batch larger than the chunk runs as a loop over padded chunks: same logits
        chunked = dataclasses.replace(net.spec, batch_chunk=4)
        out = _jit_apply(chunked, net.params, x, _adjacency(V))
        assert _relative(out, reference) < 1e-5
        # the key axis (V = 6) padded to 8 by default, unpadded, or padded to 16: same logits
        for multiple in (1, 16):
            keys = dataclasses.replace(net.spec, key_multiple=multiple)
            assert _relative(_jit_apply(keys, net.params, x, _adjacency(V)), reference) < 1e-5


def test_compaction_removes_pruned_heads_columns_and_dead_units():
    cfg, apply, params = _model("neighbours", (4,))
    shapes = prunable_parameters(params)
    dense = dense_flops(cfg, n_nodes=V, n_features=F, n_classes=K)
    ones = {n: np.ones(s, bool) for n, s in shapes.items()}
    net = compact(params, ones, cfg, adjacency=_adjacency(V))
    assert compact_flops(net, V) == dense
    assert net.params["fc0"]["kernel"].shape == params["fc0"]["kernel"].shape

    masks = {n: m.copy() for n, m in ones.items()}
    masks["block0/conv"][1] = False  # head 1 outputs relu(bias) only: folded, head removed
    masks["fc1/kernel"][:, 2] = False  # hidden unit 2 of fc1 constant: folded
    masks["fc0/kernel"][:, 0] = False  # unit 0 of fc0 constant: folded into fc1's bias
    net = compact(params, masks, cfg, adjacency=_adjacency(V))
    assert net.spec.blocks[0].heads == (0, 2)
    # one projection for the kept heads' queries, keys (4 dims each) and conv columns
    assert net.params["block0"]["proj0"].shape == (F, 2 * (4 + 4 + 4))
    assert [g.heads for g in net.spec.blocks[0].groups] == [(0, 2)]
    assert net.params["fc0"]["kernel"].shape == (V * 8, 6)
    assert net.params["fc1"]["kernel"].shape == (6, 4)
    assert net.params["classifier"]["kernel"].shape == (4, K)
    assert compact_flops(net, V) < dense
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, V, F)), jnp.float32)
    reference = _masked_logits(apply, params, masks, x)
    assert _relative(apply_compact(net.spec, net.params, x, _adjacency(V)), reference) < 1e-5
    # the structured FLOP count (SPEC §8) and the compacted network agree here
    assert compact_flops(net, V) == flops_structured(
        masks, cfg, n_nodes=V, n_features=F, n_classes=K
    )


@pytest.fixture(scope="module")
def sbu_run():
    env = os.environ.get("GCNPRUNE_DATA_DIR")
    if not env:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("GCNPRUNE_DATA_DIR is not set; CI must run the real-data tests")
        pytest.skip("GCNPRUNE_DATA_DIR is not set; real-data tests skipped")
    from gcnprune_jax.config import default_config
    from gcnprune_jax.data import load_dataset
    from gcnprune_jax.runner import Run

    cfg = default_config("sbu").replace(fold="1", method="structured", target_rate=0.9)
    return Run(cfg, load_dataset("sbu", None))


def test_compaction_is_exact_on_real_sbu_inputs(sbu_run):
    run = sbu_run
    latent = jax.tree.map(lambda a: np.asarray(a[0]), run.initial_state.latent)
    x = jnp.asarray(run.data.test.x[0][np.asarray(run.data.test.w[0]) > 0])
    leaves = {n: np.asarray(w) for n, w in prunable_leaves(latent).items()}
    rng = np.random.default_rng(0)
    for structure in ("column", "row", "random"):
        if structure == "random":
            masks = {n: rng.random(w.shape) > 0.9 for n, w in leaves.items()}
        else:
            options = run.cfg.pruning.__class__(structure=structure)
            selected = run.baseline.select(
                leaves, 0.9, key=jax.random.key(0), grads=None, options=options
            )
            masks = {n: np.asarray(m) > 0.5 for n, m in selected.items()}
        reference = _masked_logits(run.apply_fn, latent, masks, x)
        net = compact(latent, masks, run.cfg.model, adjacency=np.asarray(run.adjacency))
        out = apply_compact(net.spec, net.params, x, np.asarray(run.adjacency))
        assert _relative(out, reference) < 1e-5, structure
        assert float(np.max(np.abs(np.asarray(out) - np.asarray(reference)))) < 1e-5, structure
        assert compact_flops(net, run.ds.n_nodes) == flops_structured(
            masks, run.cfg.model, **run.model_dims
        ), structure
        if structure == "column":
            assert compact_flops(net, run.ds.n_nodes) < 0.5 * dense_flops(
                run.cfg.model, **run.model_dims
            )


def test_export_and_bench_commands(tmp_path):
    out = tmp_path / "run"
    args = ["--method", "structured", "--rate", "0.7", "--epochs", "4", "--chunk-epochs", "2"]
    gcnprune("prune", *args, *TINY, "--out", str(out), check=True)
    proc = gcnprune(
        "export", "--checkpoint", str(out), "--batch", "8", "--format", "stablehlo", check=True
    )
    assert "max relative error" in proc.stdout and "model.stablehlo" in proc.stdout
    meta = json.loads((out / "compact" / "compact.json").read_text())
    assert meta["method"] == "structured" and meta["max_relative_error"] < 1e-5
    assert meta["portable"]["stablehlo"]["max_relative_error"] <= 1e-5
    assert (out / "compact" / "model.stablehlo").stat().st_size == meta["portable"]["stablehlo"][
        "bytes"
    ]
    assert meta["flops_compact"] < meta["flops_dense"]
    assert meta["flops_compact"] == meta["flops_structured"]
    assert set(meta["shapes"]) >= {"fc0/kernel", "classifier/kernel", "block0/proj0"}
    net, adjacency, _ = load_compact(out / "compact")
    assert [
        list(
            np.shape(
                np.asarray(
                    net.params["fc0"]["kernel"].todense()
                    if hasattr(net.params["fc0"]["kernel"], "todense")
                    else net.params["fc0"]["kernel"]
                )
            )
        )
    ] == [meta["shapes"]["fc0/kernel"]]

    from gcnprune_jax.runner import load_checkpoint

    run, state, _ = load_checkpoint(out)
    latent = jax.tree.map(lambda a: np.asarray(a[0]), state.latent)
    masks = dict(np.load(out / "masks.npz"))
    x = jnp.asarray(run.data.test.x[0][:16])
    reference = _masked_logits(run.apply_fn, latent, masks, x)
    assert _relative(apply_compact(net.spec, net.params, x, adjacency), reference) < 1e-5
    # the portable file runs without gcnprune's code, at any batch size
    from gcnprune_jax.deploy import load_stablehlo

    portable = load_stablehlo(out / "compact" / "model.stablehlo")
    assert _relative(portable(x), reference) < 1e-5
    assert _relative(portable(x[:3]), reference[:3]) < 1e-5

    proc = gcnprune(
        "bench", "--checkpoint", str(out), "--batch-sizes", "1,8", "--repeats", "1", check=True
    )
    result = json.loads((out / "bench" / "bench.json").read_text())
    assert {(r["path"], r["batch"]) for r in result["rows"]} == {
        (p, b) for p in PATHS for b in (1, 8)
    }
    assert all(r["speedup"] == 1.0 for r in result["rows"] if r["path"] == "masked_dense")
    assert max(result["max_relative_error"].values()) < 1e-5
    assert (out / "bench" / "bench.md").read_text().startswith("| method |")

    bad = gcnprune("bench", "--method", "ctf", "--rate", "0.9", "--out", str(tmp_path / "b"))
    assert bad.returncode == 2 and "--checkpoint" in bad.stderr
    missing = gcnprune("export", "--checkpoint", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    unknown = gcnprune("export", "--checkpoint", str(out), "--format", "stablehlo,tflite")
    assert unknown.returncode == 2 and "'tflite'" in unknown.stderr and "onnx" in unknown.stderr


def test_onnx_without_its_extra_is_a_clear_error(monkeypatch):
    import sys

    from gcnprune_jax.deploy import parse_formats
    from gcnprune_jax.errors import ConfigError

    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"gcnprune-jax\[onnx\]"):
        parse_formats("stablehlo,onnx")
    assert parse_formats("stablehlo, stablehlo") == ("stablehlo",)


def test_portable_exports_match_jax_on_real_sbu_inputs(sbu_run, tmp_path):
    """StableHLO (always) and ONNX (where the extra `onnx` is installed): the exported file,
    read back and run by its runtime on real SBU test inputs, gives the masked network's
    logits within 1e-5."""
    from gcnprune_jax.deploy import LOADERS, write_portable

    run = sbu_run
    latent = jax.tree.map(lambda a: np.asarray(a[0]), run.initial_state.latent)
    x = np.asarray(run.data.test.x[0][np.asarray(run.data.test.w[0]) > 0])
    leaves = {n: np.asarray(w) for n, w in prunable_leaves(latent).items()}
    options = run.cfg.pruning.__class__(structure="column")
    selected = run.baseline.select(leaves, 0.9, key=jax.random.key(0), grads=None, options=options)
    masks = {n: np.asarray(m) > 0.5 for n, m in selected.items()}
    reference = _masked_logits(run.apply_fn, latent, masks, x)
    net = compact(latent, masks, run.cfg.model, adjacency=np.asarray(run.adjacency))
    formats = ["stablehlo"]
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        formats.append("onnx")
    except ImportError:
        pass  # the extra is optional; StableHLO is still checked
    info = write_portable(net, np.asarray(run.adjacency), x, tmp_path, formats)
    assert set(info) == set(formats)
    for fmt in formats:
        logits = LOADERS[fmt](tmp_path / info[fmt]["file"])(x)
        assert _relative(logits, reference) < 1e-5, fmt
        assert np.asarray(logits).shape == (len(x), reference.shape[1]), fmt
