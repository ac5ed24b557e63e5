"""Embedded default dataset: procedural single-person actions on the SBU 15-joint skeleton.

`make_synthetic()` needs no files and is deterministic in its seed (numpy Generator, no global
state; train and test are independent child streams of `SeedSequence(seed)`). It returns a
`SkeletonDataset` named "synthetic": one person, the 15 SBU joints and their kinematic tree
(README §1.3/§1.6, root TORSO, edges as (parent, child) pairs), groups 0 = train and
1 = test, ids "synthetic/train/00012", balanced shuffled labels.

Generation. A ~1.7 m humanoid (bone lengths near SBU's means) is posed by forward kinematics:
each bone gets a rotation relative to its parent bone (shoulder flexion/abduction, elbow
flexion/lift, hip and knee flexion, trunk bend, head nod), so bones are rigid by construction.
Coordinates are metres in a y-up frame with the floor at y = 0; the subject stands near the
origin facing -z. Each class drives a few angles over time (see `_MOTIONS`); classes 0-7 are
the default, 8-9 are added with n_classes=10:

  0 wave_right_arm            5 kick_right_leg
  1 wave_left_arm             6 walk_in_place
  2 punch_forward_right_arm   7 march_in_place_high_knees
  3 reach_forward_right_arm   8 kick_left_leg
  4 raise_both_arms_sideways  9 bend_torso_forward

Deliberately confusable pairs: punch vs reach (same arm and direction: repeated strokes from a
bent elbow vs one slow reach and hold) and walk vs march (same alternating legs; march is
slower with higher knees, and the amplitude ranges overlap). Per sample: length T uniform in
[20, 48] frames (15 fps nominal), speed x0.75-1.33, onset up to 50% of T, oscillation phase,
amplitude x(1 +- 0.45), one-shot duration, subject size x0.9-1.1 and per-bone proportions
+-5%, idle-pose variation and a slight sway, an unrelated distractor arm lift (up to 60 deg)
at a random time, rotation about the vertical axis (+-75 deg), translation (+-0.5 m
horizontally) and i.i.d. Gaussian noise (std 0.025 m) on every coordinate.

Difficulty (measured with the defaults, seeds 0-4; chance 12.5%). Features: the project's
standard node signals, `gcnprune_jax.data.features` with `FeatureConfig()` (4 equal temporal
chunks, mean xyz per chunk = 12 per joint, sequence centering, global standardization fitted
on train), flattened to 180 inputs. Check classifiers, full batch: softmax regression, zero
init, 300 gradient steps, lr 0.5, L2 1e-3, in JAX (`tests/test_synthetic.py::_check_accuracy`);
and a 1-hidden-layer MLP (64 ReLU units, N(0, 1/fan_in) init, 300 steps, lr 0.1, L2 1e-3,
numpy). Accuracy, train / test:

  features                               softmax regression          MLP
  FeatureConfig() (default)              0.77-0.82 / 0.73-0.78       0.81-0.88 / 0.78-0.82
  center="none", per-feature standard.   0.87-0.91 / 0.83-0.86       0.93-0.96 / 0.80-0.83
  n_classes=10, FeatureConfig()          0.80-0.86 / 0.75-0.83       0.88-0.92 / 0.83-0.86

Almost all errors are within the two confusable pairs; the other classes are ~95-100%.
`make_synthetic()` takes ~0.11-0.13 s (720 sequences, 2-core CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.errors import ConfigError

# SBU joint order and kinematic tree (OpenNI/NiTE, shoulders on the neck, root TORSO).
JOINT_NAMES: tuple[str, ...] = (
    "HEAD",
    "NECK",
    "TORSO",
    "LEFT_SHOULDER",
    "LEFT_ELBOW",
    "LEFT_HAND",
    "RIGHT_SHOULDER",
    "RIGHT_ELBOW",
    "RIGHT_HAND",
    "LEFT_HIP",
    "LEFT_KNEE",
    "LEFT_FOOT",
    "RIGHT_HIP",
    "RIGHT_KNEE",
    "RIGHT_FOOT",
)
PARENTS: tuple[int, ...] = (1, 2, -1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13)
EDGES: tuple[tuple[int, int], ...] = tuple((p, j) for j, p in enumerate(PARENTS) if p >= 0)
ROOT = 2
# Parents before children, so forward kinematics is one pass.
_ORDER: tuple[int, ...] = (2, 1, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)

HEAD, NECK, TORSO = 0, 1, 2
L_SHOULDER, L_ELBOW, L_HAND, R_SHOULDER, R_ELBOW, R_HAND = 3, 4, 5, 6, 7, 8
L_HIP, L_KNEE, L_FOOT, R_HIP, R_KNEE, R_FOOT = 9, 10, 11, 12, 13, 14

# Rest pose in the body frame (metres): x = the subject's left, y = up, z = forward.
# offset[j] is the bone parent(j) -> j; arms hang, legs straight. Feet are 1.08 m below the
# torso joint and the head joint (head centre) 0.49 m above it: a ~1.7 m person (crown ~1.68 m).
# Lengths are close to SBU's measured means (README §1.6).
_REST_OFFSETS = np.array(
    [
        [0.0, 0.22, 0.0],  # HEAD from NECK
        [0.0, 0.27, 0.0],  # NECK from TORSO
        [0.0, 0.0, 0.0],  # TORSO (root)
        [0.17, 0.0, 0.0],  # LEFT_SHOULDER from NECK
        [0.0, -0.29, 0.0],  # LEFT_ELBOW from LEFT_SHOULDER (upper arm)
        [0.0, -0.27, 0.0],  # LEFT_HAND from LEFT_ELBOW (forearm)
        [-0.17, 0.0, 0.0],  # RIGHT_SHOULDER
        [0.0, -0.29, 0.0],  # RIGHT_ELBOW
        [0.0, -0.27, 0.0],  # RIGHT_HAND
        [0.10, -0.17, 0.0],  # LEFT_HIP from TORSO
        [0.0, -0.46, 0.0],  # LEFT_KNEE (thigh)
        [0.0, -0.45, 0.0],  # LEFT_FOOT (shin)
        [-0.10, -0.17, 0.0],  # RIGHT_HIP
        [0.0, -0.46, 0.0],  # RIGHT_KNEE
        [0.0, -0.45, 0.0],  # RIGHT_FOOT
    ]
)
_TORSO_HEIGHT = 0.17 + 0.46 + 0.45  # torso joint above the floor at rest

FPS = 15.0  # nominal frame rate (SBU's), used to turn motion frequencies into frames

# Joint angles (radians) that drive the skeleton; each motion sets some of them over time.
# sh_flex: arm swings forward (0 = hanging, pi/2 = pointing forward); sh_abd: arm raised
# sideways; el_flex: forearm bends forward; el_lift: forearm bends upward in the frontal plane
# (waving); hip_flex: thigh forward; knee_flex: shin backward; bend: trunk pitches forward.
_ANGLES = (
    "l_sh_flex", "l_sh_abd", "l_el_flex", "l_el_lift",
    "r_sh_flex", "r_sh_abd", "r_el_flex", "r_el_lift",
    "l_hip_flex", "l_knee_flex", "r_hip_flex", "r_knee_flex",
    "bend", "nod",
)  # fmt: skip

_D = np.pi / 180.0


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class _Motion:
    """Per-sample timing of one batch of sequences of the same class, shapes (n, T_max).

    tau: motion time in seconds since onset (speed-scaled, 0 before onset); env: 0 -> 1 ramp at
    onset; u: progress through the active part of the sequence, 0 at onset and ~1 at the last
    frame (speed-scaled); cyc: oscillation phase in radians; amp: (n, 1) amplitude factor;
    dur: (n, 1) share of the active part that a one-shot motion takes.
    """

    def __init__(self, tau, env, u, cyc, amp, dur) -> None:
        self.tau, self.env, self.u, self.cyc, self.amp, self.dur = tau, env, u, cyc, amp, dur

    def osc(self) -> np.ndarray:
        """Zero-mean oscillation in [-1, 1], faded in at onset."""
        return self.env * np.sin(self.cyc)

    def pulse(self) -> np.ndarray:
        """Repeated 0 -> 1 -> 0 strokes (one per cycle), faded in at onset."""
        return self.env * (0.5 - 0.5 * np.cos(self.cyc)) ** 2

    def once(self, start: float, length: float) -> np.ndarray:
        """Single smooth 0 -> 1 transition over u in [start, start + length], then hold."""
        return _smoothstep((self.u - start) / length)

    def bump(self) -> np.ndarray:
        """Single smooth 0 -> 1 -> 0 over the active part of the sequence."""
        return np.sin(np.pi * np.clip(self.u, 0.0, 1.0)) ** 2


# Each motion: (descriptive name, cycles per second at speed 1, angle function).
def _wave(side: str) -> Callable[[_Motion], dict]:
    def f(m: _Motion) -> dict:
        a = m.amp
        return {
            f"{side}_sh_abd": m.env * 85 * _D,
            f"{side}_el_lift": m.env * (70 * _D) + m.osc() * (35 * _D) * a,
        }

    return f


def _punch(m: _Motion) -> dict:
    # The arm comes up in front of the chest, then strikes forward once per cycle.
    p = m.env * (0.5 - 0.5 * np.cos(m.cyc)) * np.minimum(m.amp, 1.1)
    return {"r_sh_flex": m.env * 70 * _D + p * 15 * _D, "r_el_flex": m.env * 100 * _D - p * 90 * _D}


def _reach(m: _Motion) -> dict:
    # One slow reach forward, then hold: the same arm and direction as a punch.
    p = m.once(0.0, m.dur) * m.amp
    return {"r_sh_flex": p * 85 * _D, "r_el_flex": m.env * (30 + 30 * (1 - p)) * _D}


def _raise_both(m: _Motion) -> dict:
    a = m.once(0.0, m.dur) * (110 + 45 * m.amp) * _D
    return {"l_sh_abd": a, "r_sh_abd": a}


def _kick(side: str) -> Callable[[_Motion], dict]:
    def f(m: _Motion) -> dict:
        p = m.pulse() * m.amp
        return {
            f"{side}_hip_flex": p * 70 * _D,
            f"{side}_knee_flex": m.env * 25 * _D + np.sin(np.pi * np.clip(p, 0, 1)) * 50 * _D,
        }

    return f


def _stepping(hip_deg: float, knee_ratio: float, arm_deg: float) -> Callable[[_Motion], dict]:
    def f(m: _Motion) -> dict:
        left = np.maximum(m.osc(), 0.0) * m.amp
        right = np.maximum(-m.osc(), 0.0) * m.amp
        return {
            "l_hip_flex": left * hip_deg * _D,
            "l_knee_flex": left * hip_deg * knee_ratio * _D,
            "r_hip_flex": right * hip_deg * _D,
            "r_knee_flex": right * hip_deg * knee_ratio * _D,
            "l_sh_flex": m.osc() * -arm_deg * _D,
            "r_sh_flex": m.osc() * arm_deg * _D,
        }

    return f


def _bend(m: _Motion) -> dict:
    b = m.bump() * m.amp * 55 * _D
    # Arms keep hanging roughly vertically while the trunk pitches forward.
    return {"bend": b, "l_sh_flex": 0.85 * b, "r_sh_flex": 0.85 * b, "nod": -0.3 * b}


# Order matters: make_synthetic(n_classes=k) uses the first k. Deliberately confusable pairs
# within the default 8: punch vs reach (same arm, same direction: repeated strokes from a bent
# elbow vs one slow reach and hold) and walk vs march in place (same legs, same alternating
# pattern; march has higher knees, is slower and swings the arms more; the amplitude ranges
# overlap). Kicks share the raised knee with marching.
_MOTIONS: tuple[tuple[str, float, Callable[[_Motion], dict]], ...] = (
    ("wave_right_arm", 1.3, _wave("r")),
    ("wave_left_arm", 1.3, _wave("l")),
    ("punch_forward_right_arm", 1.1, _punch),
    ("reach_forward_right_arm", 1.0, _reach),
    ("raise_both_arms_sideways", 1.0, _raise_both),
    ("kick_right_leg", 0.8, _kick("r")),
    ("walk_in_place", 1.0, _stepping(32.0, 1.6, 15.0)),
    ("march_in_place_high_knees", 0.75, _stepping(50.0, 1.6, 20.0)),
    ("kick_left_leg", 0.8, _kick("l")),
    ("bend_torso_forward", 1.0, _bend),
)
MAX_CLASSES = len(_MOTIONS)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], axis=-1).reshape(*a.shape, 3, 3)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], axis=-1).reshape(*a.shape, 3, 3)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], axis=-1).reshape(*a.shape, 3, 3)


def _forward_kinematics(
    angles: dict[str, np.ndarray], lengths: np.ndarray, yaw: np.ndarray
) -> np.ndarray:
    """Joint angles (n, T) and bone lengths (n, 15) -> positions (n, T, 15, 3), body at origin.

    Each bone parent(j) -> j gets a rotation relative to its parent bone; a bone's world
    orientation is the product along the chain, so joints move rigidly with their parents.
    """
    n, t = angles["bend"].shape
    # Positive sh_flex/el_flex/hip_flex swing a hanging limb forward (+z): Rx(-angle).
    # Abduction raises the left arm towards +x (Rz(+)) and the right arm towards -x (Rz(-)).
    bone_rot = {
        NECK: _rx(angles["bend"]),
        HEAD: _rx(angles["nod"]),
        L_ELBOW: _rz(angles["l_sh_abd"]) @ _rx(-angles["l_sh_flex"]),
        R_ELBOW: _rz(-angles["r_sh_abd"]) @ _rx(-angles["r_sh_flex"]),
        L_HAND: _rz(angles["l_el_lift"]) @ _rx(-angles["l_el_flex"]),
        R_HAND: _rz(-angles["r_el_lift"]) @ _rx(-angles["r_el_flex"]),
        L_KNEE: _rx(-angles["l_hip_flex"]),
        R_KNEE: _rx(-angles["r_hip_flex"]),
        L_FOOT: _rx(angles["l_knee_flex"]),
        R_FOOT: _rx(angles["r_knee_flex"]),
    }
    unit = _REST_OFFSETS / np.maximum(np.linalg.norm(_REST_OFFSETS, axis=1, keepdims=True), 1e-12)
    offsets = unit[None] * lengths[:, :, None]  # (n, 15, 3)
    root_rot = np.broadcast_to(_ry(yaw)[:, None], (n, t, 3, 3))
    world_rot = {ROOT: root_rot}
    pos = np.zeros((n, t, 15, 3))
    for j in _ORDER[1:]:
        p = PARENTS[j]
        rot = world_rot[p] if j not in bone_rot else world_rot[p] @ bone_rot[j]
        world_rot[j] = rot
        pos[:, :, j] = pos[:, :, p] + np.einsum("ntab,nb->nta", rot, offsets[:, j])
    return pos


def _generate_split(
    rng: np.random.Generator,
    n: int,
    n_classes: int,
    *,
    noise: float,
    t_range: tuple[int, int],
    max_yaw: float,
    translation: float,
    jitter: float,
    fidget: float,
    max_onset: float,
) -> tuple[list[np.ndarray], np.ndarray]:
    labels = rng.permutation(np.arange(n) % n_classes)
    t_lo, t_hi = t_range
    t_max = t_hi
    lengths_t = rng.integers(t_lo, t_hi + 1, size=n)
    frame = np.arange(t_max, dtype=np.float64)[None]

    # Per-sample nuisance parameters (drawn for every sample, in a fixed order).
    speed = np.exp(rng.uniform(np.log(0.75), np.log(1.33), size=(n, 1)))
    onset = rng.uniform(0.0, max_onset, size=(n, 1)) * lengths_t[:, None]
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    amp = rng.uniform(1.0 - jitter, 1.0 + jitter, size=(n, 1))
    dur = rng.uniform(0.35, 0.75, size=(n, 1))  # one-shot motions: share of the active part
    size = rng.uniform(0.9, 1.1, size=(n, 1))  # subject size (all bones)
    bone_jitter = rng.uniform(0.95, 1.05, size=(n, 15))  # proportions
    yaw = np.pi + rng.uniform(-max_yaw, max_yaw, size=n)  # facing the camera (-z) +- max_yaw
    shift = rng.uniform(-translation, translation, size=(n, 3)) * np.array([1.0, 0.05, 1.0])
    rest = rng.uniform(0.0, 1.0, size=(n, 6))  # idle-pose variation
    sway_phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    # Distractor: an unrelated gesture (one arm lifts forward and drops) at a random time.
    fidget_arm = rng.integers(0, 2, size=n)
    fidget_deg = rng.uniform(0.0, fidget, size=(n, 1))
    fidget_at = rng.uniform(0.0, 1.0, size=(n, 1)) * lengths_t[:, None]
    fidget_len = rng.uniform(6.0, 15.0, size=(n, 1))

    tau = np.maximum(frame - onset, 0.0) / FPS * speed
    env = _smoothstep(tau / 0.35)
    active = np.maximum(lengths_t[:, None] - 1 - onset, 1.0)
    u = np.clip((frame - onset) / active * speed, 0.0, None)
    sway = np.sin(2 * np.pi * 0.3 * frame / FPS + sway_phase)

    angles = {k: np.zeros((n, t_max)) for k in _ANGLES}
    angles["l_sh_abd"] += (4 + 10 * rest[:, :1]) * _D
    angles["r_sh_abd"] += (4 + 10 * rest[:, 1:2]) * _D
    angles["l_el_flex"] += (5 + 20 * rest[:, 2:3]) * _D
    angles["r_el_flex"] += (5 + 20 * rest[:, 3:4]) * _D
    angles["bend"] += (-3 + 8 * rest[:, 4:5]) * _D + sway * 2 * _D
    angles["nod"] += (-5 + 10 * rest[:, 5:6]) * _D
    lift = np.sin(np.pi * np.clip((frame - fidget_at) / fidget_len, 0.0, 1.0)) ** 2
    angles["l_sh_flex"] += np.where(fidget_arm[:, None] == 0, lift, 0.0) * fidget_deg * _D
    angles["r_sh_flex"] += np.where(fidget_arm[:, None] == 1, lift, 0.0) * fidget_deg * _D
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        _, freq, fn = _MOTIONS[c]
        cyc = 2 * np.pi * freq * tau[idx] + phase[idx]
        m = _Motion(tau[idx], env[idx], u[idx], cyc, amp[idx], dur[idx])
        for k, v in fn(m).items():
            angles[k][idx] += v

    for k in ("l_el_flex", "r_el_flex", "l_knee_flex", "r_knee_flex"):
        np.clip(angles[k], 0.0, 150 * _D, out=angles[k])  # no hyperextension
    lengths = np.linalg.norm(_REST_OFFSETS, axis=1)[None] * size * bone_jitter
    pos = _forward_kinematics(angles, lengths, yaw)
    pos[..., 1] += _TORSO_HEIGHT * size[:, :, None]
    pos += shift[:, None, None]
    pos += rng.normal(0.0, noise, size=pos.shape)
    pos = pos.astype(np.float32)
    seqs = [np.ascontiguousarray(pos[i, : lengths_t[i]]) for i in range(n)]
    return seqs, labels.astype(np.int64)


def make_synthetic(
    seed: int = 0,
    *,
    n_train: int = 480,
    n_test: int = 240,
    n_classes: int = 8,
    noise: float = 0.025,
    t_range: tuple[int, int] = (20, 48),
    max_yaw_deg: float = 75.0,
    translation: float = 0.5,
    amplitude_jitter: float = 0.45,
    fidget_deg: float = 60.0,
    max_onset: float = 0.5,
) -> SkeletonDataset:
    """Generate the synthetic action dataset (no files needed), deterministic in `seed`.

    Args:
      seed: seeds a numpy Generator; train and test come from independent child streams, so
        the training set does not depend on n_test.
      n_train, n_test: sequences per split (groups 0 and 1); labels are balanced (class counts
        differ by at most one) and shuffled.
      n_classes: how many of the 10 motions to use (the first n_classes of class order).
      noise: std (metres) of i.i.d. Gaussian noise on every coordinate of every frame.
      t_range: inclusive range of sequence lengths T (frames, 15 fps nominal).
      max_yaw_deg: subjects face the camera (-z) up to this many degrees off, about +y.
      translation: subject position uniform in +-translation metres along x and z (and
        5% of it vertically).
      amplitude_jitter: per-sample motion amplitude factor uniform in 1 +- this.
    """
    if not 2 <= n_classes <= MAX_CLASSES:
        raise ConfigError(f"synthetic n_classes must be in [2, {MAX_CLASSES}], got {n_classes}")
    if n_train < 0 or n_test < 0:
        raise ConfigError(f"synthetic n_train/n_test must be >= 0, got {n_train}/{n_test}")
    if not 1 <= t_range[0] <= t_range[1]:
        raise ConfigError(f"synthetic t_range must be 1 <= lo <= hi, got {t_range}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ConfigError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    for field, value in (
        ("noise", noise),
        ("max_yaw_deg", max_yaw_deg),
        ("translation", translation),
        ("fidget_deg", fidget_deg),
    ):
        if not value >= 0:
            raise ConfigError(f"synthetic {field} must be >= 0, got {value}")
    for field, value in (("amplitude_jitter", amplitude_jitter), ("max_onset", max_onset)):
        if not 0 <= value < 1:
            raise ConfigError(f"synthetic {field} must be in [0, 1), got {value}")
    train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
    opts = dict(
        noise=noise,
        t_range=(int(t_range[0]), int(t_range[1])),
        max_yaw=max_yaw_deg * _D,
        translation=translation,
        jitter=amplitude_jitter,
        fidget=fidget_deg * 1.0,
        max_onset=max_onset,
    )
    sequences: list[np.ndarray] = []
    labels, groups, ids = [], [], []
    for group, (split, ss, n) in enumerate(
        (("train", train_ss, n_train), ("test", test_ss, n_test))
    ):
        seqs, lab = _generate_split(np.random.default_rng(ss), n, n_classes, **opts)
        sequences += seqs
        labels.append(lab)
        groups.append(np.full(n, group, dtype=np.int64))
        ids += [f"synthetic/{split}/{i:05d}" for i in range(n)]
    return SkeletonDataset(
        name="synthetic",
        sequences=tuple(sequences),
        labels=np.concatenate(labels).astype(np.int64),
        groups=np.concatenate(groups).astype(np.int64),
        ids=tuple(ids),
        class_names=tuple(name for name, _, _ in _MOTIONS[:n_classes]),
        joint_names=JOINT_NAMES,
        edges=EDGES,
        n_persons=1,
    )
