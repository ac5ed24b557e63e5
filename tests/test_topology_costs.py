"""Topological consistency (SPEC §3) and FLOP counts (SPEC §8) on crisp masks."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from gcnprune_jax.costs import dense_flops, flops_structured, flops_unstructured
from gcnprune_jax.models import GCNConfig, build_gcn, prunable_parameters
from gcnprune_jax.topology import (
    check_gcn_masks,
    consistent_masks,
    dangling_connections,
    gcn_live,
    gcn_mask_shapes,
)

V, F, N_CLASSES = 3, 2, 3
CFG = GCNConfig(heads=2, filters=(3,), attention_dim=2, fc=(4,), attention="neighbours")


def ones(cfg: GCNConfig = CFG, n_nodes: int = V, n_features: int = F) -> dict[str, np.ndarray]:
    shapes = gcn_mask_shapes(cfg, n_nodes=n_nodes, n_features=n_features, n_classes=N_CLASSES)
    return {name: np.ones(shape, dtype=bool) for name, shape in shapes.items()}


def random_masks(rng: np.random.Generator, cfg: GCNConfig, density: float, n_nodes: int = V):
    return {k: rng.random(m.shape) < density for k, m in ones(cfg, n_nodes).items()}


DIMS = {"n_nodes": V, "n_features": F, "n_classes": N_CLASSES}


# ---------------------------------------------------------------------------------------------
# consistent_masks on plain chains


def brute_force(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Mark every entry of every complete input→output path, found by DFS."""
    out = [np.zeros_like(m, dtype=bool) for m in masks]

    def dfs(layer: int, unit: int, path: list[tuple[int, int]]) -> None:
        if layer == len(masks):
            for k, (i, o) in enumerate(path):
                out[k][i, o] = True
            return
        for o in np.flatnonzero(masks[layer][unit]):
            dfs(layer + 1, int(o), [*path, (unit, int(o))])

    for unit in range(masks[0].shape[0]):
        dfs(0, unit, [])
    return out


def random_chain(rng: np.random.Generator) -> list[np.ndarray]:
    n_layers = int(rng.integers(1, 5))
    widths = rng.integers(1, 5, size=n_layers + 1)
    masks = []
    for k in range(n_layers):
        shape = (int(widths[k]), int(widths[k + 1]))
        kind = rng.random()
        if kind < 0.1:
            m = np.zeros(shape, dtype=bool)
        elif kind < 0.2:
            m = np.ones(shape, dtype=bool)
        else:
            m = rng.random(shape) < rng.uniform(0.1, 0.9)
        masks.append(m)
    return masks


def test_consistent_masks_matches_path_enumeration():
    rng = np.random.default_rng(0)
    n_nonempty = 0
    for _ in range(300):
        masks = random_chain(rng)
        got = consistent_masks(masks)
        want = brute_force(masks)
        assert len(got) == len(masks)
        for g, w, m in zip(got, want, masks, strict=True):
            assert g.dtype == bool and g.shape == m.shape
            np.testing.assert_array_equal(g, w)
        n_nonempty += any(g.any() for g in got)
        # idempotence and subset of the input
        again = consistent_masks(got)
        for g, a, m in zip(got, again, masks, strict=True):
            np.testing.assert_array_equal(a, g)
            assert not (g & ~m).any()
    assert n_nonempty > 50  # the random chains exercise non-trivial cases


def test_consistent_masks_simple_cases():
    full = [np.ones((2, 3)), np.ones((3, 2))]
    assert all(m.all() for m in consistent_masks(full))
    dead_out = [np.ones((2, 3)), np.array([[1, 1], [0, 0], [1, 0]])]
    first, _ = consistent_masks(dead_out)
    np.testing.assert_array_equal(first, [[1, 0, 1], [1, 0, 1]])
    dead_in = [np.array([[1, 0, 1], [1, 0, 1]]), np.ones((3, 2))]
    _, second = consistent_masks(dead_in)
    np.testing.assert_array_equal(second, [[1, 1], [0, 0], [1, 1]])
    assert consistent_masks([]) == []


def test_consistent_masks_shape_errors():
    with pytest.raises(ValueError, match="layer 1"):
        consistent_masks([np.ones((2, 3)), np.ones((4, 2))])
    with pytest.raises(ValueError, match="layer 0"):
        consistent_masks([np.ones((2, 3, 1))])


# ---------------------------------------------------------------------------------------------
# gcn_live / dangling_connections


@pytest.mark.parametrize("attention", ["adjacency", "neighbours"])
def test_mask_shapes_match_the_model(attention):
    cfg = GCNConfig(heads=2, filters=(3, 2), attention_dim=2, fc=(4,), attention=attention)
    _, params = build_gcn(
        cfg,
        n_nodes=V,
        n_features=F,
        n_classes=N_CLASSES,
        adjacency=np.eye(V, dtype=np.float32),
        key=jax.random.PRNGKey(0),
    )
    assert gcn_mask_shapes(cfg, **DIMS) == prunable_parameters(params)


def test_check_gcn_masks_errors():
    masks = ones()
    del masks["block0/key"]
    with pytest.raises(ValueError, match="block0/key"):
        gcn_live(masks, CFG, n_nodes=V)
    masks = ones()
    masks["fc1/kernel"] = np.ones((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="fc1/kernel"):
        dangling_connections(masks, CFG, n_nodes=V)
    masks = ones()
    masks["fc0/kernel"] = np.ones((17, 4), dtype=bool)
    with pytest.raises(ValueError, match="fc0/kernel"):
        gcn_live(masks, CFG, n_nodes=V)
    with pytest.raises(ValueError, match="fc0/kernel"):
        gcn_live(ones(), CFG, n_nodes=V + 1)  # the flatten width disagrees with n_nodes
    with pytest.raises(ValueError, match="block0/"):
        check_gcn_masks(ones(), CFG, n_nodes=V, n_features=F + 1)


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,
        GCNConfig(heads=1, filters=(2,), attention_dim=1, fc=(), attention="adjacency"),
        GCNConfig(heads=3, filters=(2, 3), attention_dim=2, fc=(4, 5), attention="softmax"),
    ],
)
def test_all_ones_has_nothing_dangling(cfg):
    masks = ones(cfg)
    live = gcn_live(masks, cfg, n_nodes=V)
    assert set(live) == set(masks)
    assert all(live[k].all() and live[k].shape == masks[k].shape for k in masks)
    assert dangling_connections(masks, cfg, n_nodes=V) == 0


def test_dead_fc_rows_make_a_conv_column_dangling():
    masks = ones()
    h, c, width = 1, 2, CFG.heads * CFG.filters[0]
    for v in range(V):
        masks["fc0/kernel"][v * width + h * 3 + c] = False
    live = gcn_live(masks, CFG, n_nodes=V)
    assert not live["block0/conv"][h, :, c].any()
    assert dangling_connections(masks, CFG, n_nodes=V) == F  # the column's F entries
    assert live["block0/query"].all() and live["block0/key"].all()  # the head is still live


def test_fc_rows_of_a_dead_unit_are_dangling():
    masks = ones()
    masks["block0/conv"][0, :, 1] = False  # unit j = 0 * 3 + 1 is never computed
    live = gcn_live(masks, CFG, n_nodes=V)
    width = CFG.heads * CFG.filters[0]
    for v in range(V):
        assert not live["fc0/kernel"][v * width + 1].any()
    assert dangling_connections(masks, CFG, n_nodes=V) == V * CFG.fc[0]


def test_a_dead_head_leaves_its_attention_dangling():
    masks = ones()
    masks["block0/conv"][0] = False
    live = gcn_live(masks, CFG, n_nodes=V)
    assert not live["block0/query"][0].any() and not live["block0/key"][0].any()
    assert live["block0/query"][1].all() and live["block0/key"][1].all()
    n_attn = 2 * F * CFG.attention_dim  # query and key of head 0
    n_fc = V * CFG.filters[0] * CFG.fc[0]  # fc0 rows of head 0's units at every node
    assert dangling_connections(masks, CFG, n_nodes=V) == n_attn + n_fc


def test_a_query_column_without_key_is_dangling():
    masks = ones()
    masks["block0/key"][0, :, 0] = False
    live = gcn_live(masks, CFG, n_nodes=V)
    assert not live["block0/query"][0, :, 0].any()
    assert live["block0/query"][0, :, 1].all() and live["block0/query"][1].all()
    assert dangling_connections(masks, CFG, n_nodes=V) == F


def test_inputs_feeding_live_attention_are_coaccessible():
    cfg = GCNConfig(heads=2, filters=(3, 2), attention_dim=2, fc=(), attention="softmax")
    masks = ones(cfg)
    masks["block1/conv"][:, 4] = False  # block1 input 4 = block0 unit (1, 1) feeds no conv
    assert dangling_connections(masks, cfg, n_nodes=V) == 0  # it still feeds attention
    masks["block1/query"][:, 4] = False
    assert dangling_connections(masks, cfg, n_nodes=V) == 0  # it still feeds keys
    masks["block1/key"][:, 4] = False
    live = gcn_live(masks, cfg, n_nodes=V)
    assert not live["block0/conv"][1, :, 1].any()
    assert dangling_connections(masks, cfg, n_nodes=V) == F


def kron_chain(masks: dict[str, np.ndarray], cfg: GCNConfig) -> list[np.ndarray]:
    """The "adjacency" GCN as a plain chain over (node, unit) pairs with fully mixing A."""
    chain = []
    for b in range(len(cfg.filters)):
        conv = masks[f"block{b}/conv"]  # (H, s, C) -> (s, H*C), column h*C + c
        full = conv.transpose(1, 0, 2).reshape(conv.shape[1], -1)
        chain.append(np.kron(np.ones((V, V), dtype=bool), full))  # index v * width + unit
    chain += [masks[f"fc{i}/kernel"] for i in range(len(cfg.fc))] + [masks["classifier/kernel"]]
    return chain


@pytest.mark.parametrize("filters", [(3,), (2, 3)])
@pytest.mark.parametrize("fc", [(), (4,), (4, 3)])
def test_adjacency_gcn_matches_the_expanded_chain(filters, fc):
    cfg = GCNConfig(heads=2, filters=filters, attention_dim=2, fc=fc, attention="adjacency")
    rng = np.random.default_rng(len(filters) * 10 + len(fc))
    for density in (0.2, 0.4, 0.6, 0.9):
        for _ in range(5):
            masks = random_masks(rng, cfg, density)
            live = gcn_live(masks, cfg, n_nodes=V)
            chain = consistent_masks(kron_chain(masks, cfg))
            for b in range(len(filters)):
                conv = masks[f"block{b}/conv"]
                h, s, c = conv.shape
                blocks = chain[b].reshape(V, s, V, h, c)  # any over (source, target) nodes
                want = blocks.any(axis=(0, 2)).transpose(1, 0, 2)
                np.testing.assert_array_equal(live[f"block{b}/conv"], want)
            for name, got in zip(
                [f"fc{i}/kernel" for i in range(len(fc))] + ["classifier/kernel"],
                chain[len(filters) :],
                strict=True,
            ):
                np.testing.assert_array_equal(live[name], got)


@pytest.mark.parametrize("attention", ["adjacency", "softmax+adjacency", "neighbours"])
def test_live_masks_are_a_fixed_point(attention):
    cfg = GCNConfig(heads=2, filters=(3, 2), attention_dim=2, fc=(4,), attention=attention)
    rng = np.random.default_rng(1)
    for density in (0.2, 0.4, 0.6, 0.8):
        for _ in range(10):
            masks = random_masks(rng, cfg, density)
            live = gcn_live(masks, cfg, n_nodes=V)
            assert all(not (live[k] & ~masks[k]).any() for k in masks)
            expected = sum(int(masks[k].sum() - live[k].sum()) for k in masks)
            assert dangling_connections(masks, cfg, n_nodes=V) == expected
            again = gcn_live(live, cfg, n_nodes=V)
            assert all(np.array_equal(again[k], live[k]) for k in masks)
            assert dangling_connections(live, cfg, n_nodes=V) == 0


# ---------------------------------------------------------------------------------------------
# FLOPs


@pytest.mark.parametrize(
    ("attention", "filters", "fc"),
    list(
        itertools.product(
            ["adjacency", "softmax+adjacency", "neighbours"], [(3,), (3, 2)], [(), (4,), (4, 5)]
        )
    ),
)
def test_all_ones_costs_equal_dense(attention, filters, fc):
    cfg = GCNConfig(heads=2, filters=filters, attention_dim=2, fc=fc, attention=attention)
    masks = ones(cfg)
    dense = dense_flops(cfg, **DIMS)
    assert flops_unstructured(masks, cfg, **DIMS) == dense
    assert flops_structured(masks, cfg, **DIMS) == dense
    zeros = {k: np.zeros_like(m) for k, m in masks.items()}
    assert flops_structured(zeros, cfg, **DIMS) == 0
    assert flops_unstructured(zeros, cfg, **DIMS) == 0


def test_structured_flops_after_removing_a_head():
    masks = ones()
    masks["block0/conv"][0] = False
    c, d, hidden = CFG.filters[0], CFG.attention_dim, CFG.fc[0]
    dense = dense_flops(CFG, **DIMS)
    conv = 2 * V * F * c + 2 * V * V * c  # X W_0 and A_0 (X W_0)
    attention = 2 * (2 * V * F * d) + 2 * V * V * d  # X Q_0, X K_0 and their product
    fc0 = 2 * (V * c) * hidden  # head 0's units at every node leave fc0
    assert dense - flops_structured(masks, CFG, **DIMS) == conv + attention + fc0 == 246
    assert flops_structured(masks, CFG, **DIMS) < dense
    # unstructured only loses head 0's conv products; its attention is still counted
    assert dense - flops_unstructured(masks, CFG, **DIMS) == conv


def test_unstructured_flops_per_entry():
    masks = ones()
    dense = dense_flops(CFG, **DIMS)
    masks["block0/conv"][0, 0, 0] = False  # columns keep their other row: still alive
    masks["block0/conv"][1, 1, 2] = False
    assert dense - flops_unstructured(masks, CFG, **DIMS) == 2 * (2 * V)
    masks["block0/query"][1, 0, 1] = False
    assert dense - flops_unstructured(masks, CFG, **DIMS) == 3 * (2 * V)
    masks["fc0/kernel"][5, 2] = False
    masks["classifier/kernel"][0, 0] = False
    assert dense - flops_unstructured(masks, CFG, **DIMS) == 3 * (2 * V) + 2 * 2
    # a whole key column removed: its F weight entries and the dim's logit product go
    masks = ones()
    masks["block0/key"][0, :, 1] = False
    assert dense - flops_unstructured(masks, CFG, **DIMS) == 2 * V * F + 2 * V * V
    with pytest.raises(ValueError, match="block0"):
        flops_unstructured(masks, CFG, n_nodes=V, n_features=F + 1, n_classes=N_CLASSES)
