"""Node signals of docs/methods.md#the-gcn: each joint's trajectory summarized by temporal chunk
means.

A sequence (T, V, 3) becomes a (V, F) node-feature matrix. The default follows
docs/methods.md#the-gcn exactly (4 equal chunks, mean xyz per chunk: F = 12); the options below
(centering, hand frame, person order, velocities, more chunks) are the input normalizations measured
in the README's ablation table. Standardization statistics are fitted on training sequences only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.data.sbu import SBU_MM_PER_UNIT
from gcnprune_jax.errors import ConfigError

CENTERINGS = ("none", "sequence", "first_frame", "hand_frame")
PERSON_ORDERS = ("as_is", "motion")
STANDARDIZATIONS = ("global", "isotropic", "per_feature", "none")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How node signals are computed from raw trajectories.

    chunks: equal temporal chunks per sequence (docs/methods.md#the-gcn: M_c = 4).
    center: "none" (raw coordinates); "sequence" (subtract the sequence's mean position over
      all frames and nodes); "first_frame" (subtract the first frame's mean node position);
      "hand_frame" (FPHA: origin at the wrist of the mean pose, axes z = wrist→MMCP,
      x = MMCP→IMCP, as public FPHA code does; applied to a single-person hand skeleton).
    person_order: two-person data (SBU): "as_is" keeps files' A/B order, "motion" puts the
      person whose joints move most first (the actor), since which of A and B acts is not fixed.
    velocities: append each chunk's mean velocity (frame differences) to its mean position.
    millimetres: SBU: undo the dataset's anisotropic normalization (x, y, z units of 2560, 1920
      and 1280 mm) before anything else, so distances and angles are physical.
    swap_persons: two-person data: also train on every training sequence with its persons
      swapped (augmentation; the author used none). Test sequences are not augmented.
    augment_copies: extra randomly transformed copies of each training sequence (0: none, as
      the author). Each copy keeps a random temporal window of at least `augment_crop` of the
      frames, is rotated about its centroid by up to `augment_rotation_deg` around a random
      axis and scaled by a factor in [1 - augment_scale, 1 + augment_scale]. Seeded by the
      run seed; test sequences are never augmented.
    standardize: "global" (one mean and std over all training features of each coordinate
      kind, so x, y and z are scaled separately), "isotropic" (per-kind means, one std shared
      by x, y and z, which keeps the skeleton's proportions), "per_feature" (per node and
      feature), or "none"; fitted on training data only.
    """

    chunks: int = 4
    center: str = "sequence"
    person_order: str = "motion"
    velocities: bool = False
    swap_persons: bool = False
    millimetres: bool = False
    augment_copies: int = 0
    augment_rotation_deg: float = 30.0
    augment_scale: float = 0.2
    augment_crop: float = 0.6
    standardize: str = "isotropic"

    def __post_init__(self) -> None:
        if self.augment_copies < 0 or not 0 < self.augment_crop <= 1:
            raise ConfigError(
                "features.augment_copies must be >= 0 and features.augment_crop in (0, 1], "
                f"got {self.augment_copies} and {self.augment_crop}"
            )
        if self.chunks < 1:
            raise ConfigError(f"features.chunks must be >= 1, got {self.chunks}")
        for field, allowed in (
            ("center", CENTERINGS),
            ("person_order", PERSON_ORDERS),
            ("standardize", STANDARDIZATIONS),
        ):
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(f"features.{field} must be one of {allowed}, got {value!r}")

    @property
    def per_chunk(self) -> int:
        return 6 if self.velocities else 3

    @property
    def n_features(self) -> int:
        return self.chunks * self.per_chunk


def resample(seq: np.ndarray, length: int) -> np.ndarray:
    """Linearly resample a (T, V, 3) trajectory to `length` frames (endpoints kept)."""
    t = seq.shape[0]
    if t == length:
        return seq
    if t == 1:
        return np.repeat(seq, length, axis=0)
    pos = np.linspace(0.0, t - 1, length)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    frac = (pos - lo)[:, None, None]
    return (1.0 - frac) * seq[lo] + frac * seq[hi]


def chunk_means(seq: np.ndarray, chunks: int) -> np.ndarray:
    """(T, V, D) -> (chunks, V, D): mean of each of `chunks` equal temporal chunks.

    A sequence shorter than `chunks` frames (FPHA has 7-frame sequences, and more chunks may be
    asked for) is first resampled to `chunks` frames: averaging over an empty chunk gives NaN,
    which silently kills training.
    """
    if seq.shape[0] < chunks:
        seq = resample(seq, chunks)
    bounds = np.linspace(0, seq.shape[0], chunks + 1).round().astype(int)
    return np.stack([seq[bounds[k] : bounds[k + 1]].mean(axis=0) for k in range(chunks)])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about a unit axis."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def augment_sequence(seq: np.ndarray, cfg: FeatureConfig, rng: np.random.Generator) -> np.ndarray:
    """One random training copy of a (T, V, 3) sequence: temporal crop, rotation, scale."""
    t = seq.shape[0]
    length = max(1, int(np.ceil(rng.uniform(cfg.augment_crop, 1.0) * t)))
    start = rng.integers(0, t - length + 1)
    seq = np.asarray(seq[start : start + length], np.float64)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-cfg.augment_rotation_deg, cfg.augment_rotation_deg))
    scale = rng.uniform(1.0 - cfg.augment_scale, 1.0 + cfg.augment_scale)
    centroid = seq.mean(axis=(0, 1))
    return (seq - centroid) @ _rotation(axis, angle).T * scale + centroid


def _hand_frame(seq: np.ndarray) -> np.ndarray:
    """FPHA hand frame: origin at the mean wrist, z along wrist→MMCP, x along MMCP→IMCP."""
    mean_pose = seq.mean(axis=0)
    wrist, imcp, mmcp = mean_pose[0], mean_pose[2], mean_pose[3]
    z = mmcp - wrist
    z = z / (np.linalg.norm(z) + 1e-8)
    x = imcp - mmcp
    x = x - np.dot(x, z) * z
    x = x / (np.linalg.norm(x) + 1e-8)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z], axis=1)  # columns are the new axes
    return (seq - wrist) @ rotation


def _order_persons(seq: np.ndarray, n_persons: int) -> np.ndarray:
    """Put the person with the largest joint motion (sum of frame-to-frame speeds) first."""
    t, v, _ = seq.shape
    per_person = seq.reshape(t, n_persons, v // n_persons, 3)
    motion = np.linalg.norm(np.diff(per_person, axis=0), axis=-1).sum(axis=(0, 2))
    order = np.argsort(-motion, kind="stable")
    return per_person[:, order].reshape(t, v, 3)


def sequence_features(
    seq: np.ndarray, n_persons: int, cfg: FeatureConfig, *, swap: bool = False
) -> np.ndarray:
    """One sequence (T, V, 3) -> node features (V, cfg.n_features), before standardization.

    Feature layout per node: for each chunk k, [mean x, y, z] (and, with velocities,
    [mean dx, dy, dz]) in chunk order. `swap` reverses the persons after ordering them.
    """
    seq = np.asarray(seq, dtype=np.float64)
    if cfg.person_order == "motion" and n_persons > 1:
        seq = _order_persons(seq, n_persons)
    if swap and n_persons > 1:
        t, v, _ = seq.shape
        seq = seq.reshape(t, n_persons, v // n_persons, 3)[:, ::-1].reshape(t, v, 3)
    if cfg.center == "sequence":
        seq = seq - seq.mean(axis=(0, 1))
    elif cfg.center == "first_frame":
        seq = seq - seq[0].mean(axis=0)
    elif cfg.center == "hand_frame":
        if n_persons != 1 or seq.shape[1] != 21:
            raise ConfigError(
                "features.center='hand_frame' needs a 21-joint single-hand skeleton (FPHA), "
                f"got {n_persons} person(s) x {seq.shape[1] // n_persons} joints"
            )
        seq = _hand_frame(seq)
    parts = [chunk_means(seq, cfg.chunks)]
    if cfg.velocities:
        if seq.shape[0] < 2:
            seq = resample(seq, 2)
        velocity = np.diff(seq, axis=0)
        parts.append(chunk_means(velocity, cfg.chunks))
    # (chunks, V, per_chunk) -> (V, chunks * per_chunk)
    stacked = np.concatenate(parts, axis=-1)
    return stacked.transpose(1, 0, 2).reshape(seq.shape[1], -1).astype(np.float32)


def dataset_features(
    ds: SkeletonDataset,
    cfg: FeatureConfig,
    *,
    swap: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """All sequences -> (N, V, F) float32, unstandardized.

    swap: reverse the persons. rng: replace each sequence by a random `augment_sequence` copy
    (training copies).
    """
    sequences = ds.sequences
    if cfg.millimetres and ds.name == "sbu":
        scale = np.asarray(SBU_MM_PER_UNIT, np.float32)
        sequences = tuple(s * scale for s in sequences)
    if rng is not None:
        sequences = tuple(augment_sequence(s, cfg, rng) for s in sequences)
    return np.stack([sequence_features(s, ds.n_persons, cfg, swap=swap) for s in sequences])


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Affine feature normalization fitted on training data: x -> (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def fit_standardizer(train_x: np.ndarray, cfg: FeatureConfig) -> Standardizer:
    """Fit on training features (N, V, F) only, so no test statistics leak into training.

    "global": one mean/std per feature kind (position x/y/z, velocity x/y/z), shared by all
    nodes and chunks, which keeps the geometry between joints intact.
    """
    n_features = train_x.shape[-1]
    if cfg.standardize == "none":
        return Standardizer(np.zeros(n_features, np.float32), np.ones(n_features, np.float32))
    if cfg.standardize == "per_feature":
        mean = train_x.mean(axis=0)
        std = train_x.std(axis=0)
    else:
        kinds = train_x.reshape(train_x.shape[0], train_x.shape[1], cfg.chunks, cfg.per_chunk)
        mean = kinds.mean(axis=(0, 1, 2))
        std = kinds.std(axis=(0, 1, 2))
        if cfg.standardize == "isotropic":
            # One scale per kind group (positions, velocities) shared by x, y and z.
            groups = std.reshape(-1, 3)
            std = np.repeat(np.sqrt((groups**2).mean(axis=1)), 3)
        mean, std = np.tile(mean, cfg.chunks), np.tile(std, cfg.chunks)
    return Standardizer(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))


def normalized_adjacency(n_nodes: int, edges: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Symmetric normalized adjacency with self-loops, D^-1/2 (A + I) D^-1/2, shape (V, V)."""
    adj = np.eye(n_nodes, dtype=np.float64)
    for i, j in edges:
        adj[i, j] = adj[j, i] = 1.0
    inv_sqrt = 1.0 / np.sqrt(adj.sum(axis=1))
    return (adj * inv_sqrt[:, None] * inv_sqrt[None, :]).astype(np.float32)
