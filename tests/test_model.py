"""The GCN of SPEC §7: shapes, prunable view, sizes, jit agreement, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.data.features import normalized_adjacency
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models import GCNConfig, build_gcn, count_prunable, prunable_parameters

EDGES = tuple((i, i + 1) for i in range(5))


def build(cfg=GCNConfig(), n_nodes=6, n_features=12, n_classes=5, seed=0):
    adj = normalized_adjacency(n_nodes, EDGES)
    return build_gcn(
        cfg,
        n_nodes=n_nodes,
        n_features=n_features,
        n_classes=n_classes,
        adjacency=adj,
        key=jax.random.PRNGKey(seed),
    )


@pytest.mark.parametrize(
    "attention", ["softmax+adjacency", "softmax", "adjacency", "neighbours", "mean"]
)
def test_shapes_and_prunable_view(attention):
    cfg = GCNConfig(heads=4, filters=(8, 6), attention_dim=5, fc=(32, 16), attention=attention)
    apply, params = build(cfg)
    x = jnp.ones((3, 6, 12))
    assert apply(params, x).shape == (3, 5)
    shapes = prunable_parameters(params)
    assert shapes["block0/conv"] == (4, 12, 8)  # (G, I, O): one channel per head
    assert shapes["block1/conv"] == (4, 4 * 8, 6)
    assert shapes["fc0/kernel"] == (6 * 4 * 6, 32)
    assert shapes["classifier/kernel"] == (16, 5)
    if attention == "adjacency":
        assert "block0/query" not in shapes
    else:
        assert shapes["block0/query"] == (4, 12, 5) and shapes["block1/key"] == (4, 32, 5)
    # biases and gains are never prunable
    assert not any(name.endswith(("bias", "adjacency_gain")) for name in shapes)


@pytest.mark.parametrize("n_nodes", [30, 21])
def test_defaults_are_overparametrized(n_nodes):
    # SBU (30 nodes, 8 classes) and FPHA (21 nodes, 45 classes): SPEC §7 asks >= 0.5 M.
    _, params = build(n_nodes=n_nodes, n_classes=45)
    assert count_prunable(params) >= 500_000


def test_jit_and_eager_agree_and_grads_are_finite():
    apply, params = build()
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 12))
    np.testing.assert_allclose(jax.jit(apply)(params, x), apply(params, x), rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(apply(p, x) ** 2))(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["block0"]["query"]).sum()) > 0  # attention is trained


def test_dropout_only_with_a_key():
    apply, params = build(GCNConfig(dropout=0.5))
    x = jnp.ones((2, 6, 12))
    np.testing.assert_array_equal(apply(params, x), apply(params, x))
    a = apply(params, x, jax.random.PRNGKey(0))
    b = apply(params, x, jax.random.PRNGKey(1))
    assert not np.allclose(a, b)


def test_same_key_same_params():
    _, p1 = build(seed=3)
    _, p2 = build(seed=3)
    _, p3 = build(seed=4)
    assert all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True)
    )
    assert not np.array_equal(p1["fc0"]["kernel"], p3["fc0"]["kernel"])


@pytest.mark.parametrize(
    "bad", [{"attention": "dot"}, {"heads": 0}, {"filters": ()}, {"dropout": 1.0}, {"fc": (0,)}]
)
def test_bad_model_options(bad):
    with pytest.raises(ConfigError):
        GCNConfig(**bad)


@pytest.mark.parametrize("attention", ["softmax+adjacency", "softmax", "neighbours", "mean"])
def test_attention_rows_are_stochastic_and_neighbours_stay_on_the_graph(attention):
    from flax import nnx

    from gcnprune_jax.models.gcn import GCN

    adj = normalized_adjacency(6, EDGES)
    model = GCN(
        GCNConfig(heads=3, attention=attention, fc=(8,)),
        n_nodes=6,
        n_features=12,
        n_classes=2,
        adjacency=adj,
        rngs=nnx.Rngs(0),
    )
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 12))
    attn = np.asarray(model.block0.attention_matrices(x))
    assert attn.shape == (2, 3, 6, 6)
    if attention != "mean":  # the mean of a stochastic matrix and Â is not row-stochastic
        np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
    if attention == "neighbours":
        assert np.all(attn[:, :, adj == 0] == 0)
        assert np.all(attn[:, :, adj > 0] > 0)
