"""Tests of the embedded synthetic dataset (gcnprune_jax.data.synthetic)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnprune_jax.data.features import FeatureConfig, dataset_features, fit_standardizer
from gcnprune_jax.data.synthetic import JOINT_NAMES, MAX_CLASSES, make_synthetic
from gcnprune_jax.errors import ConfigError

SBU_JOINTS = (
    "HEAD", "NECK", "TORSO", "LEFT_SHOULDER", "LEFT_ELBOW", "LEFT_HAND", "RIGHT_SHOULDER",
    "RIGHT_ELBOW", "RIGHT_HAND", "LEFT_HIP", "LEFT_KNEE", "LEFT_FOOT", "RIGHT_HIP",
    "RIGHT_KNEE", "RIGHT_FOOT",
)  # fmt: skip
SBU_PARENTS = [1, 2, -1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13]


@pytest.fixture(scope="module")
def default_ds():
    return make_synthetic()


def _bone_lengths(seq: np.ndarray, edges) -> np.ndarray:
    """(T, 15, 3) -> (T, n_edges) bone lengths."""
    i, j = np.array(edges).T
    return np.linalg.norm(seq[:, i].astype(np.float64) - seq[:, j], axis=-1)


def test_shapes_dtypes_and_metadata(default_ds):
    ds = default_ds
    assert ds.name == "synthetic"
    assert len(ds) == 480 + 240
    assert ds.n_persons == 1 and ds.n_nodes == 15 and ds.n_classes == 8
    assert ds.joint_names == SBU_JOINTS == JOINT_NAMES
    assert len(set(ds.class_names)) == 8 and all(ds.class_names)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (720,)
    assert ds.groups.dtype == np.int64 and ds.groups.shape == (720,)
    assert ds.labels.min() == 0 and ds.labels.max() == 7
    lengths = set()
    for seq in ds.sequences:
        assert seq.dtype == np.float32 and seq.ndim == 3 and seq.shape[1:] == (15, 3)
        assert 20 <= seq.shape[0] <= 48
        assert np.isfinite(seq).all()
        lengths.add(seq.shape[0])
    assert len(lengths) > 10  # T really varies
    assert len(set(ds.ids)) == len(ds)
    for sid, g in zip(ds.ids, ds.groups, strict=True):
        split = "train" if g == 0 else "test"
        assert re.fullmatch(rf"synthetic/{split}/\d{{5}}", sid), sid
    assert ds.ids[12] == "synthetic/train/00012" and ds.ids[480] == "synthetic/test/00000"


def _identical(a, b) -> bool:
    return (
        a.ids == b.ids
        and np.array_equal(a.labels, b.labels)
        and len(a.sequences) == len(b.sequences)
        and all(
            x.shape == y.shape and np.array_equal(x, y)
            for x, y in zip(a.sequences, b.sequences, strict=True)
        )
    )


def test_deterministic_in_seed():
    a = make_synthetic(3, n_train=40, n_test=16)
    b = make_synthetic(3, n_train=40, n_test=16)
    c = make_synthetic(4, n_train=40, n_test=16)
    assert _identical(a, b)
    assert not _identical(a, c)
    # Not just a different order or length: the coordinates themselves differ, in both splits.
    for k in (0, 40):  # first train and first test sequence
        x, z = a.sequences[k], c.sequences[k]
        m = min(len(x), len(z))
        assert np.abs(x[:m] - z[:m]).max() > 0.01


def test_train_split_independent_of_test_size():
    a = make_synthetic(1, n_train=24, n_test=8)
    b = make_synthetic(1, n_train=24, n_test=40)
    np.testing.assert_array_equal(a.labels[:24], b.labels[:24])
    for x, y in zip(a.sequences[:24], b.sequences[:24], strict=True):
        np.testing.assert_array_equal(x, y)


def test_balanced_labels(default_ds):
    ds = default_ds
    for group, per_class in ((0, 60), (1, 30)):
        counts = np.bincount(ds.labels[ds.groups == group], minlength=8)
        np.testing.assert_array_equal(counts, per_class)
    # Labels are shuffled, not a repeating 0..k-1 pattern.
    assert not np.array_equal(ds.labels[:8], np.arange(8))
    odd = make_synthetic(0, n_train=53, n_test=7, n_classes=MAX_CLASSES)
    assert odd.n_classes == MAX_CLASSES
    counts = np.bincount(odd.labels[odd.groups == 0], minlength=MAX_CLASSES)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 53


def test_group_sizes_and_order():
    ds = make_synthetic(2, n_train=37, n_test=11, n_classes=3)
    np.testing.assert_array_equal(ds.groups, [0] * 37 + [1] * 11)
    assert ds.n_classes == 3 and len(ds.sequences) == len(ds.ids) == 48
    empty_test = make_synthetic(2, n_train=6, n_test=0)
    assert len(empty_test) == 6 and (empty_test.groups == 0).all()


def test_edges_are_the_sbu_tree():
    ds = make_synthetic(0, n_train=2, n_test=0)
    expected = {(p, j) for j, p in enumerate(SBU_PARENTS) if p >= 0}
    assert len(ds.edges) == 14 and set(ds.edges) == expected
    # A tree: 14 edges over 15 nodes with no cycle (union-find), hence connected.
    root = list(range(15))

    def find(x: int) -> int:
        while root[x] != x:
            x = root[x]
        return x

    for i, j in ds.edges:
        assert 0 <= i < 15 and 0 <= j < 15 and i != j
        ri, rj = find(i), find(j)
        assert ri != rj, f"edge {(i, j)} closes a cycle"
        root[ri] = rj
    assert len({find(v) for v in range(15)}) == 1


def test_bones_rigid_within_sequence():
    clean = make_synthetic(5, n_train=40, n_test=0, noise=0.0)
    for seq in clean.sequences:
        bones = _bone_lengths(seq, clean.edges)
        cv = bones.std(axis=0) / bones.mean(axis=0)
        assert cv.max() < 1e-4
    # Subjects differ in size: the same bone varies across sequences.
    thigh = clean.edges.index((9, 10))
    per_seq = np.array([_bone_lengths(s, clean.edges)[0, thigh] for s in clean.sequences])
    assert per_seq.min() > 0.35 and per_seq.max() < 0.6 and per_seq.std() / per_seq.mean() > 0.03
    # With noise, the length spread is what the noise explains (std ~ sqrt(2) * sigma).
    sigma = 0.02
    noisy = make_synthetic(5, n_train=40, n_test=0, noise=sigma)
    spread = np.array([_bone_lengths(s, noisy.edges).std(axis=0) for s in noisy.sequences])
    assert 0.5 * sigma < np.median(spread) < 2.0 * np.sqrt(2.0) * sigma


def test_humanoid_geometry():
    ds = make_synthetic(0, n_train=40, n_test=0, noise=0.0)
    y = np.stack([s[0, :, 1] for s in ds.sequences])  # first frame, vertical axis
    j = {name: k for k, name in enumerate(ds.joint_names)}
    assert (y[:, j["HEAD"]] > y[:, j["NECK"]]).all()
    assert (y[:, j["NECK"]] > y[:, j["TORSO"]]).all()
    feet = np.minimum(y[:, j["LEFT_FOOT"]], y[:, j["RIGHT_FOOT"]])
    height = y[:, j["HEAD"]] - feet  # head centre above the floor
    assert height.min() > 1.35 and height.max() < 1.85
    assert np.abs(feet).max() < 0.1  # standing on the floor y = 0


def test_each_action_moves_its_limb():
    ds = make_synthetic(0, n_train=200, n_test=0, n_classes=MAX_CLASSES, noise=0.0, fidget_deg=0)
    j = {name: k for k, name in enumerate(ds.joint_names)}
    expected = {
        "wave_right_arm": "RIGHT_HAND",
        "wave_left_arm": "LEFT_HAND",
        "punch_forward_right_arm": "RIGHT_HAND",
        "reach_forward_right_arm": "RIGHT_HAND",
        "kick_right_leg": "RIGHT_FOOT",
        "kick_left_leg": "LEFT_FOOT",
        "bend_torso_forward": "HEAD",
    }
    # Per joint: mean over the class's sequences of the joint's temporal spread about the torso.
    spread = np.stack(
        [np.linalg.norm((s - s[:, j["TORSO"], None]).std(axis=0), axis=-1) for s in ds.sequences]
    )
    for c, name in enumerate(ds.class_names):
        motion = spread[ds.labels == c].mean(axis=0)
        if name in expected:
            assert ds.joint_names[int(motion.argmax())] == expected[name], name
        if name == "raise_both_arms_sideways":
            assert min(motion[j["LEFT_HAND"]], motion[j["RIGHT_HAND"]]) > 3 * motion[j["HEAD"]]
        if name in ("walk_in_place", "march_in_place_high_knees"):
            assert min(motion[j["LEFT_FOOT"]], motion[j["RIGHT_FOOT"]]) > 3 * motion[j["HEAD"]]


def _check_accuracy(ds, cfg: FeatureConfig, steps: int = 300) -> tuple[float, float]:
    """The module docstring's difficulty check: softmax regression on chunk-mean features.

    Standardized with train statistics, flattened (15 x 12 = 180 inputs), zero init, full-batch
    gradient descent (lr 0.5, L2 1e-3) in JAX. Returns (train accuracy, test accuracy).
    """
    x = dataset_features(ds, cfg)
    train = ds.groups == 0
    x = fit_standardizer(x[train], cfg)(x).reshape(len(x), -1)
    xtr, ytr, xte, yte = x[train], ds.labels[train], x[~train], ds.labels[~train]
    onehot = jax.nn.one_hot(ytr, ds.n_classes)

    def step(_, wb):
        w, b = wb
        g = (jax.nn.softmax(xtr @ w + b) - onehot) / len(ytr)
        return w - 0.5 * (xtr.T @ g + 1e-3 * w), b - 0.5 * g.sum(axis=0)

    init = (jnp.zeros((x.shape[1], ds.n_classes)), jnp.zeros(ds.n_classes))
    w, b = jax.jit(lambda wb: jax.lax.fori_loop(0, steps, step, wb))(init)
    w, b = np.asarray(w), np.asarray(b)
    return (
        float(((xtr @ w + b).argmax(axis=1) == ytr).mean()),
        float(((xte @ w + b).argmax(axis=1) == yte).mean()),
    )


def test_difficulty_learnable_not_trivial(default_ds):
    train_acc, test_acc = _check_accuracy(default_ds, FeatureConfig())
    chance = 1.0 / default_ds.n_classes
    assert 0.6 <= test_acc <= 0.9, test_acc  # measured 0.73-0.78 over seeds 0-4
    assert test_acc > 4 * chance and train_acc < 0.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_classes": 1},
        {"n_classes": MAX_CLASSES + 1},
        {"n_train": -1},
        {"noise": -0.1},
        {"t_range": (0, 10)},
        {"t_range": (30, 20)},
        {"max_onset": 1.0},
        {"amplitude_jitter": 1.0},
        {"seed": -1},
    ],
)
def test_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        make_synthetic(**kwargs)
