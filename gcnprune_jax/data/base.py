"""The in-memory form every loader returns: raw joint trajectories, labels and split groups."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SkeletonDataset:
    """A skeleton dataset as parsed from disk (or generated), before feature extraction.

    Attributes:
      name: "sbu", "fpha" or "synthetic".
      sequences: one float32 array per sequence, shape (T, V, 3): T frames, V nodes, xyz.
        For SBU, V = 30: person A's 15 joints then person B's (B's indices + 15).
      labels: (N,) int64 class indices in [0, len(class_names)).
      groups: (N,) int64. SBU: fold index 0..4 (Yun et al. folds 1..5). FPHA and synthetic:
        0 = train, 1 = test.
      ids: N identifiers, the sequence's path relative to the dataset root (or a synthetic name).
      class_names: class name per label.
      joint_names: name per node (length V).
      edges: undirected bones as (i, j) node-index pairs over all V nodes (SBU: both persons'
        trees, no inter-person edges).
      n_persons: persons per sequence (SBU 2, FPHA 1); nodes of person p are
        p * joints_per_person ... (p + 1) * joints_per_person - 1.
    """

    name: str
    sequences: tuple[np.ndarray, ...]
    labels: np.ndarray
    groups: np.ndarray
    ids: tuple[str, ...]
    class_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    n_persons: int = 1

    @property
    def n_nodes(self) -> int:
        return len(self.joint_names)

    @property
    def joints_per_person(self) -> int:
        return self.n_nodes // self.n_persons

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.sequences)
