"""The real SBU and FPHA files load with the known counts of the data README (§3).

Reads `$GCNPRUNE_DATA_DIR/sbu` and `$GCNPRUNE_DATA_DIR/fpha`. Without that variable the tests are
skipped, except under CI (`CI=true`), where a silently skipped real-data check would hide a broken
setup, so they fail instead.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gcnprune_jax.data import (
    SkeletonDataset,
    check_fpha_counts,
    check_sbu_counts,
    fpha,
    load_fpha,
    load_sbu,
    sbu,
)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    env = os.environ.get("GCNPRUNE_DATA_DIR")
    if not env:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("GCNPRUNE_DATA_DIR is not set; CI must run the real-data tests")
        pytest.skip("GCNPRUNE_DATA_DIR is not set; real-data tests skipped")
    return Path(env)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    # A fresh cache per run: the first load below is a cold parse, later ones hit the cache.
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="module")
def sbu_ds(data_dir, cache_dir) -> SkeletonDataset:
    return load_sbu(data_dir / "sbu", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def fpha_ds(data_dir, cache_dir) -> SkeletonDataset:
    return load_fpha(data_dir / "fpha", cache_dir=cache_dir)


def _lengths(ds: SkeletonDataset) -> np.ndarray:
    return np.array([len(s) for s in ds.sequences])


def _check_sha256sums(folder: Path) -> None:
    listed = [line.split(maxsplit=1) for line in (folder / "SHA256SUMS").read_text().splitlines()]
    assert listed
    bad = [
        name
        for digest, name in listed
        if hashlib.sha256((folder / name.strip()).read_bytes()).hexdigest() != digest
    ]
    assert not bad, f"checksum mismatch: {bad[:5]}"


def _assert_same(a: SkeletonDataset, b: SkeletonDataset) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.groups, b.groups)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# SBU


def test_sbu_checksums(data_dir):
    _check_sha256sums(data_dir / "sbu")


def test_sbu_known_counts(sbu_ds):
    check_sbu_counts(sbu_ds)
    assert len(sbu_ds) == 282 and sbu_ds.n_nodes == 30 and len(sbu_ds.edges) == 28
    assert np.bincount(sbu_ds.labels).tolist() == [42, 43, 40, 41, 18, 21, 39, 38]
    assert np.bincount(sbu_ds.groups).tolist() == [55, 52, 56, 54, 65]
    lengths = _lengths(sbu_ds)
    assert lengths.min() == 10 and lengths.max() == 46 and lengths.sum() == 6822
    assert all(s.shape[1:] == (30, 3) and s.dtype == np.float32 for s in sbu_ds.sequences)
    assert all(np.isfinite(s).all() for s in sbu_ds.sequences)


def test_sbu_per_fold_per_class_counts(sbu_ds):
    expected = [
        [8, 8, 8, 9, 3, 4, 7, 8],
        [7, 8, 8, 8, 3, 4, 7, 7],
        [8, 8, 8, 8, 4, 4, 7, 9],
        [9, 9, 8, 6, 3, 4, 8, 7],
        [10, 10, 8, 10, 5, 5, 10, 7],
    ]
    for fold, counts in enumerate(expected):
        found = np.bincount(sbu_ds.labels[sbu_ds.groups == fold], minlength=8).tolist()
        assert found == counts, f"fold {fold + 1}"


def test_sbu_folder_pattern(sbu_ds):
    sets = {seq_id.split("/")[0] for seq_id in sbu_ds.ids}
    assert sets == set(sbu.SBU_SETS)
    present = {tuple(seq_id.split("/")[:2]) for seq_id in sbu_ds.ids}
    missing = {(s, f"{c:02d}") for s in sbu.SBU_SETS for c in range(1, 9)} - present
    assert missing == {
        ("s02s03", "05"),
        ("s03s06", "05"),
        ("s05s02", "05"),
        ("s05s02", "07"),
        ("s06s03", "08"),
    }
    per_set = Counter(seq_id.split("/")[0] for seq_id in sbu_ds.ids)
    assert min(per_set.values()) == 12 and max(per_set.values()) == 15


def test_sbu_neck_is_shoulder_midpoint_after_denormalising(sbu_ds):
    xyz = np.concatenate(sbu_ds.sequences).astype(np.float64).reshape(-1, 2, 15, 3)
    # README §1.2: X = 1280 - 2560 x, Y = 960 - 1920 y, Z = 1280 z (mm).
    mm = np.stack([1280 - 2560 * xyz[..., 0], 960 - 1920 * xyz[..., 1], 1280 * xyz[..., 2]], -1)
    shoulders_mid = (mm[:, :, 3] + mm[:, :, 6]) / 2
    assert np.linalg.norm(mm[:, :, 1] - shoulders_mid, axis=-1).mean() < 0.1


def test_sbu_cache_reload_is_identical_without_parsing(sbu_ds, data_dir, cache_dir, monkeypatch):
    def fail(path):
        raise AssertionError(f"re-parsed {path}")

    monkeypatch.setattr(sbu, "_read_sbu_file", fail)
    _assert_same(sbu_ds, load_sbu(data_dir / "sbu", cache_dir=cache_dir))


# ---------------------------------------------------------------------------------------------
# FPHA


def test_fpha_checksums(data_dir):
    _check_sha256sums(data_dir / "fpha")


def test_fpha_known_counts(fpha_ds):
    check_fpha_counts(fpha_ds)
    assert np.bincount(fpha_ds.groups).tolist() == [600, 575]
    assert sorted(set(fpha_ds.labels.tolist())) == list(range(45))
    lengths = _lengths(fpha_ds)
    assert lengths.min() == 7 and lengths.max() == 1151 and lengths.sum() == 105459
    assert lengths[fpha_ds.groups == 0].sum() == 52324
    assert lengths[fpha_ds.groups == 1].sum() == 53135
    assert lengths[fpha_ds.groups == 1].min() == 8 and lengths[fpha_ds.groups == 1].max() == 830
    assert all(s.shape[1:] == (21, 3) and s.dtype == np.float32 for s in fpha_ds.sequences)


def test_fpha_per_subject_and_per_class_counts(fpha_ds):
    for group, expected in [(0, [95, 89, 94, 109, 106, 107]), (1, [90, 94, 96, 94, 102, 99])]:
        ids = [i for i, g in zip(fpha_ds.ids, fpha_ds.groups, strict=True) if g == group]
        per_subject = Counter(i.split("/")[0] for i in ids)
        assert [per_subject[f"Subject_{k}"] for k in range(1, 7)] == expected
    for group, (lo, hi) in [(0, (11, 17)), (1, (12, 17))]:
        per_class = np.bincount(fpha_ds.labels[fpha_ds.groups == group], minlength=45)
        assert per_class.min() == lo and per_class.max() == hi
    assert len(set(fpha_ds.ids)) == 1175  # train and test do not overlap


def test_fpha_empty_files_are_exactly_the_three_outside_the_split(fpha_ds, data_dir):
    annotations = data_dir / "fpha" / fpha.ANNOTATION_DIR
    files = list(annotations.glob("Subject_*/*/*/skeleton.txt"))
    assert len(files) == 1178
    empty = {p.parent.relative_to(annotations).as_posix() for p in files if p.stat().st_size == 0}
    assert empty == {"Subject_2/close_milk/4", "Subject_2/put_tea_bag/2", "Subject_4/flip_sponge/2"}
    assert not empty & set(fpha_ds.ids)


def test_fpha_quirky_sequences(fpha_ds, data_dir):
    crlf = "Subject_5/use_flash/6"
    raw = (data_dir / "fpha" / fpha.ANNOTATION_DIR / crlf / "skeleton.txt").read_bytes()
    assert b"\r\n" in raw and len(fpha_ds.sequences[fpha_ds.ids.index(crlf)]) > 0
    lengths = dict(zip(fpha_ds.ids, _lengths(fpha_ds), strict=True))
    # The two length outliers are kept (dropping the test one breaks comparability).
    assert lengths["Subject_2/open_letter/2"] == 1151
    assert lengths["Subject_2/open_peanut_butter/1"] == 830


def test_fpha_hand_model_is_rigid(fpha_ds):
    # Per-sequence coefficient of variation of each bone length (README §2.4, §3.7): the wrist-MCP
    # bones come from a rigid hand model (CV 0 up to float32 rounding), mean over bones < 0.03.
    cvs = []
    for seq in fpha_ds.sequences:
        xyz = seq.astype(np.float64)
        lengths = np.stack(
            [np.linalg.norm(xyz[:, i] - xyz[:, j], axis=-1) for i, j in fpha_ds.edges], axis=1
        )
        cvs.append(lengths.std(axis=0) / lengths.mean(axis=0))
    cvs = np.array(cvs)  # (N, 20)
    wrist_mcp = [k for k, (i, _) in enumerate(fpha_ds.edges) if i == 0]
    assert len(wrist_mcp) == 5
    assert cvs[:, wrist_mcp].max() < 1e-4
    assert cvs.mean() < 0.03


def test_fpha_cache_reload_is_identical_without_parsing(fpha_ds, data_dir, cache_dir, monkeypatch):
    def fail(path):
        raise AssertionError(f"re-parsed {path}")

    monkeypatch.setattr(fpha, "_read_fpha_file", fail)
    _assert_same(fpha_ds, load_fpha(data_dir / "fpha", cache_dir=cache_dir))
