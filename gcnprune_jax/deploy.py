"""Portable exports of a compacted network, for deployment with a runtime instead of this
library (`gcnprune export --format stablehlo,onnx`, docs/outputs.md#portable-exports).

- `stablehlo`: `model.stablehlo`, a serialized `jax.export.Exported` (StableHLO with the
  weights as constants, the batch dimension symbolic). Load it with
  `jax.export.deserialize(path.read_bytes()).call(x)` (jax only, no gcnprune), or compile the
  StableHLO module with any runtime that reads it (IREE, XLA).
- `onnx`: `model.onnx` (opset of `jax2onnx`, the batch dimension named "B"), for ONNX Runtime
  and the other ONNX runtimes. Needs the optional extra: `pip install 'gcnprune-jax[onnx]'`.

Both compute `compact.apply_compact` on dense kernels with no batch chunking (the portable
graph is one pass over the whole batch; the runtime decides the tiling). Every export is
read back, run on real inputs and compared with the JAX logits before it is kept.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax.compact import CompactGCN, apply_compact, with_layouts
from gcnprune_jax.errors import ConfigError

FORMATS = ("stablehlo", "onnx")
FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
TOLERANCE = 1e-5  # max relative error of an export's logits against the JAX ones


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'stablehlo,onnx' -> ('stablehlo', 'onnx'); an unknown name, or onnx without its
    packages, is a ConfigError (raised before any work)."""
    if not text:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ConfigError(
            f"--format: unknown format {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(FORMATS)} (comma-separated)"
        )
    if "stablehlo" in names:
        _require_stablehlo()
    if "onnx" in names:
        _require_onnx()
    return tuple(dict.fromkeys(names))


def portable_fn(net: CompactGCN, adjacency: Any) -> Callable[[jax.Array], jax.Array]:
    """x (B, V, F) -> logits of the compacted network, its weights closed over as constants,
    dense kernels, no batch chunking: the function the portable formats hold."""
    dense = with_layouts(net, ("dense",) * len(net.spec.layouts))
    spec = dataclasses.replace(dense.spec, batch_chunk=0)
    params = jax.tree.map(jnp.asarray, dense.params)
    adj = jnp.asarray(adjacency, jnp.float32)
    return lambda x: apply_compact(spec, params, x, adj)


def export_stablehlo(net: CompactGCN, adjacency: Any, n_features: int, path: Path) -> Path:
    """Write `net` as a serialized `jax.export.Exported` with a symbolic batch size."""
    (batch,) = jax.export.symbolic_shape("b")
    shape = jax.ShapeDtypeStruct((batch, net.spec.n_nodes, n_features), jnp.float32)
    exported = jax.export.export(jax.jit(portable_fn(net, adjacency)))(shape)
    path.write_bytes(exported.serialize())
    return path


def load_stablehlo(path: str | Path) -> Callable[[Any], jax.Array]:
    """The function `export_stablehlo` wrote: x (B, V, F) float32 -> logits."""
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    return exported.call


def _require_stablehlo() -> None:
    try:
        import flatbuffers  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"--format stablehlo needs flatbuffers ({err}), a dependency of gcnprune-jax: "
            "pip install flatbuffers"
        ) from None


def _require_onnx() -> None:
    try:
        import jax2onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"--format onnx needs jax2onnx and onnxruntime ({err}); install the optional "
            "extra: pip install 'gcnprune-jax[onnx]'"
        ) from None


def export_onnx(net: CompactGCN, adjacency: Any, n_features: int, path: Path) -> Path:
    """Write `net` as an ONNX model (jax2onnx) whose batch dimension is named "B"."""
    _require_onnx()
    import logging

    from jax2onnx import to_onnx

    # onnx_ir logs a warning per shape constant it leaves untyped; the model is still valid
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    to_onnx(
        portable_fn(net, adjacency),
        [("B", net.spec.n_nodes, n_features)],
        return_mode="file",
        output_path=str(path),
    )
    return path


def onnx_session(path: str | Path, threads: int = 0) -> Callable[[Any], np.ndarray]:
    """An ONNX Runtime session of `path` as a function x (B, V, F) float32 -> logits
    (threads 0: ONNX Runtime's default)."""
    _require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Any) -> np.ndarray:
        return session.run(None, {name: np.asarray(x, np.float32)})[0]

    return run


EXPORTERS = {"stablehlo": export_stablehlo, "onnx": export_onnx}
LOADERS = {"stablehlo": load_stablehlo, "onnx": onnx_session}


def write_portable(
    net: CompactGCN,
    adjacency: Any,
    x: np.ndarray,
    directory: str | Path,
    formats: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Export `net` in each format to `directory`, read every file back, run it on `x` and
    check its logits against the JAX ones (max relative error ≤ TOLERANCE, else an
    AssertionError naming the format). Returns {format: {file, files, bytes, export_s,
    max_relative_error}}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    xs = np.asarray(x, np.float32)
    reference = np.asarray(jax.jit(portable_fn(net, adjacency))(xs), np.float64)
    scale = max(float(np.max(np.abs(reference))), 1e-30)
    out = {}
    for fmt in formats:
        start = time.perf_counter()
        path = EXPORTERS[fmt](net, adjacency, xs.shape[-1], directory / FILES[fmt])
        seconds = time.perf_counter() - start
        logits = np.asarray(LOADERS[fmt](path)(xs), np.float64)
        error = float(np.max(np.abs(logits - reference)) / scale)
        if not error <= TOLERANCE:
            raise AssertionError(
                f"{path}: the {fmt} export's logits differ from the JAX ones by {error:.2e} "
                f"(relative; tolerance {TOLERANCE:g})"
            )
        files = [f for f in (path, path.with_name(path.name + ".data")) if f.is_file()]
        out[fmt] = {
            "file": path.name,
            # ONNX keeps large weights in model.onnx.data beside model.onnx
            "files": [f.name for f in files],
            "bytes": sum(f.stat().st_size for f in files),
            "export_s": seconds,
            "max_relative_error": error,
        }
    return out
