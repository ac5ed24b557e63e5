"""Node signals (SPEC §7): chunk means, short sequences, normalizations, standardization."""

import numpy as np
import pytest

from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.data.features import (
    FeatureConfig,
    chunk_means,
    dataset_features,
    fit_standardizer,
    normalized_adjacency,
    resample,
    sequence_features,
)
from gcnprune_jax.errors import ConfigError

RAW = FeatureConfig(center="none", person_order="as_is")


def test_chunk_means_by_hand():
    seq = np.arange(8, dtype=np.float64).reshape(8, 1, 1).repeat(3, axis=2)  # value = frame
    means = chunk_means(seq, 4)
    np.testing.assert_allclose(means[:, 0, 0], [0.5, 2.5, 4.5, 6.5])


def test_spec_layout_is_chunk_major_xyz():
    rng = np.random.default_rng(0)
    seq = rng.normal(size=(12, 5, 3))
    feats = sequence_features(seq, 1, RAW)
    assert feats.shape == (5, 12)
    # node 2, chunk 1 (frames 3..5), coordinate y is feature 1 * 3 + 1
    np.testing.assert_allclose(feats[2, 4], seq[3:6, 2, 1].mean(), rtol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_short_sequences_are_resampled_not_nan(length):
    rng = np.random.default_rng(length)
    seq = rng.normal(size=(length, 21, 3))
    for cfg in (RAW, FeatureConfig(chunks=16, velocities=True)):
        feats = sequence_features(seq, 1, cfg)
        assert feats.shape == (21, cfg.n_features)
        assert np.isfinite(feats).all()


def test_resample_keeps_endpoints_and_lines():
    seq = np.linspace(0, 1, 5).reshape(5, 1, 1) * np.ones((1, 2, 3))
    out = resample(seq, 9)
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(0, 1, 9))


def test_sequence_centering_removes_translation():
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(10, 15, 3))
    cfg = FeatureConfig(center="sequence")
    np.testing.assert_allclose(
        sequence_features(seq, 1, cfg),
        sequence_features(seq + [5.0, -2.0, 3.0], 1, cfg),
        atol=1e-5,
    )
    assert not np.allclose(sequence_features(seq, 1, RAW), sequence_features(seq + 5.0, 1, RAW))


def test_motion_order_puts_the_moving_person_first():
    rng = np.random.default_rng(2)
    still = np.repeat(rng.normal(size=(1, 15, 3)), 10, axis=0)
    moving = rng.normal(size=(10, 15, 3))
    cfg = FeatureConfig(center="none", person_order="motion")
    a_first = sequence_features(np.concatenate([moving, still], axis=1), 2, cfg)
    b_first = sequence_features(np.concatenate([still, moving], axis=1), 2, cfg)
    np.testing.assert_allclose(a_first, b_first)
    as_is = sequence_features(np.concatenate([still, moving], axis=1), 2, RAW)
    assert not np.allclose(as_is, b_first)


def test_hand_frame_is_rotation_invariant():
    rng = np.random.default_rng(3)
    seq = rng.normal(size=(9, 21, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.linalg.det(q))  # proper rotation
    cfg = FeatureConfig(center="hand_frame")
    np.testing.assert_allclose(
        sequence_features(seq, 1, cfg),
        sequence_features(seq @ rotation.T + 4.0, 1, cfg),
        atol=1e-4,
    )


def test_hand_frame_rejects_non_hand_skeletons():
    with pytest.raises(ConfigError, match="hand_frame"):
        sequence_features(np.zeros((5, 30, 3)), 2, FeatureConfig(center="hand_frame"))


def test_standardizer_uses_training_data_only():
    rng = np.random.default_rng(4)
    train = rng.normal(3.0, 2.0, size=(50, 6, 12)).astype(np.float32)
    cfg = FeatureConfig(standardize="global")
    standardize = fit_standardizer(train, cfg)
    out = standardize(train)
    # global: each coordinate kind has zero mean and unit std over all nodes and chunks
    kinds = out.reshape(50, 6, 4, 3)
    np.testing.assert_allclose(kinds.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(kinds.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    per_feature = fit_standardizer(train, FeatureConfig(standardize="per_feature"))(train)
    np.testing.assert_allclose(per_feature.mean(axis=0), 0.0, atol=1e-4)


@pytest.mark.parametrize("bad", [{"chunks": 0}, {"center": "wrist"}, {"person_order": "x"}])
def test_bad_feature_options(bad):
    with pytest.raises(ConfigError):
        FeatureConfig(**bad)


def test_normalized_adjacency():
    adj = normalized_adjacency(4, ((0, 1), (1, 2), (2, 3)))
    np.testing.assert_allclose(adj, adj.T)
    assert adj[0, 3] == 0 and adj[0, 1] > 0 and adj[2, 2] > 0
    # D^-1/2 (A+I) D^-1/2 has spectral radius 1
    assert np.isclose(np.abs(np.linalg.eigvalsh(adj)).max(), 1.0, atol=1e-5)


def test_dataset_features_shape():
    seqs = tuple(np.ones((t, 4, 3), np.float32) * t for t in (5, 9, 30))
    ds = SkeletonDataset(
        "x",
        seqs,
        np.zeros(3, np.int64),
        np.zeros(3, np.int64),
        ("a", "b", "c"),
        ("c0",),
        ("j0", "j1", "j2", "j3"),
        ((0, 1),),
    )
    assert dataset_features(ds, FeatureConfig(velocities=True)).shape == (3, 4, 24)


def test_swap_reverses_the_persons_after_ordering():
    rng = np.random.default_rng(5)
    seq = rng.normal(size=(8, 30, 3))
    cfg = FeatureConfig(center="none", person_order="as_is")
    plain = sequence_features(seq, 2, cfg)
    swapped = sequence_features(seq, 2, cfg, swap=True)
    np.testing.assert_allclose(swapped[:15], plain[15:])
    np.testing.assert_allclose(swapped[15:], plain[:15])
    # one person: nothing to swap
    np.testing.assert_allclose(
        sequence_features(seq[:, :15], 1, cfg, swap=True), sequence_features(seq[:, :15], 1, cfg)
    )


def test_isotropic_standardization_keeps_axis_ratios():
    rng = np.random.default_rng(6)
    train = (rng.normal(size=(40, 5, 12)) * np.tile([1.0, 2.0, 4.0], 4)).astype(np.float32)
    out = fit_standardizer(train, FeatureConfig(standardize="isotropic"))(train)
    stds = out.reshape(40, 5, 4, 3).std(axis=(0, 1, 2))
    np.testing.assert_allclose(stds / stds[0], [1.0, 2.0, 4.0], rtol=0.1)
    np.testing.assert_allclose(np.sqrt((stds**2).mean()), 1.0, rtol=1e-3)


def test_augmented_copy_is_a_rigid_crop_rotation_and_scale():
    from gcnprune_jax.data.features import augment_sequence

    rng = np.random.default_rng(7)
    seq = rng.normal(size=(20, 6, 3))
    cfg = FeatureConfig(augment_rotation_deg=30.0, augment_scale=0.2, augment_crop=0.5)
    out = augment_sequence(seq, cfg, np.random.default_rng(0))
    assert 10 <= out.shape[0] <= 20 and out.shape[1:] == (6, 3)
    # distances between joints change only by the common scale factor
    starts = [s for s in range(20 - out.shape[0] + 1)]
    ratios = []
    for s in starts:
        orig = seq[s : s + out.shape[0]]
        d_orig = np.linalg.norm(orig[:, 0] - orig[:, 1], axis=-1)
        d_out = np.linalg.norm(out[:, 0] - out[:, 1], axis=-1)
        ratios.append(d_out / d_orig)
    assert any(np.allclose(r, r[0]) and 0.8 <= r[0] <= 1.2 for r in ratios)
    again = augment_sequence(seq, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_bad_augmentation_options():
    with pytest.raises(ConfigError, match="augment"):
        FeatureConfig(augment_copies=-1)
    with pytest.raises(ConfigError, match="augment"):
        FeatureConfig(augment_crop=0.0)
