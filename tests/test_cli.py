"""The `gcnprune` command line: result.json, exit status 2 on bad input, resume after kill."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--heads", "2", "--filters", "4", "--attention-dim", "4", "--fc", "16"]
RESULT_KEYS = {
    "dataset",
    "method",
    "target_rate",
    "realized_rate",
    "soft_rate",
    "rounding_changed",
    "accuracy",
    "fold_accuracies",
    "params_total",
    "params_kept",
    "flops_dense",
    "flops_unstructured",
    "flops_structured",
    "dangling_connections",
    "epochs",
    "seed",
    "params_digest",
    "wall_time_s",
    "config",
}


def gcnprune(*args, check=False, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "gcnprune_jax.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def test_train_writes_result_json(tmp_path):
    out = tmp_path / "run"
    gcnprune("train", "--epochs", "4", "--chunk-epochs", "2", *TINY, "--out", str(out), check=True)
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    assert result["method"] == "dense" and result["target_rate"] == 0
    assert result["realized_rate"] == 0 and result["params_kept"] == result["params_total"]
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["fold_accuracies"]) == 1
    assert result["config"]["model"]["fc"] == [16] and result["epochs"] == 4
    # eval re-evaluates the checkpoint to the same numbers
    proc = gcnprune("eval", "--checkpoint", str(out), check=True)
    evaluated = json.loads(proc.stdout)
    assert evaluated["accuracy"] == result["accuracy"]
    assert evaluated["params_digest"] == result["params_digest"]


def test_existing_run_needs_resume(tmp_path):
    out = tmp_path / "run"
    gcnprune("train", "--epochs", "2", *TINY, "--out", str(out), check=True)
    proc = gcnprune("train", "--epochs", "2", *TINY, "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr
    proc = gcnprune("train", "--epochs", "2", *TINY, "--lr", "0.01", "--out", str(out), "--resume")
    assert proc.returncode == 2 and "--lr: 0.001 -> 0.01" in proc.stderr
    assert "--fc" not in proc.stderr  # only what really changed is listed
    assert "Traceback" not in proc.stderr


def _write_sbu_file(root: Path, text: str) -> Path:
    path = root / "s01s02" / "01" / "001" / "skeleton_pos.txt"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "sbu", "--data-dir", "/nonexistent/sbu"], "/nonexistent/sbu"),
        (["--epochs", "0"], "--epochs"),
        (["--lr", "-1"], "--lr"),
        (["--fold", "2"], "--fold"),
        (["--dataset", "sbu", "--fold", "7"], "--fold"),
        (["--dataset", "imagenet"], "--dataset"),
        (["--filters", "a"], "--filters"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, args, expected):
    proc = gcnprune("train", *args, "--out", str(tmp_path / "never"))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "never").exists()


def test_malformed_data_file_names_file_and_line(tmp_path):
    good = ",".join(["1"] + ["0.5"] * 90)
    path = _write_sbu_file(tmp_path / "sbu", f"{good}\r\n{good}\r\n1,2,3\r\n")
    proc = gcnprune(
        "train",
        "--dataset",
        "sbu",
        "--data-dir",
        str(tmp_path / "sbu"),
        "--out",
        str(tmp_path / "never"),
    )
    assert proc.returncode == 2
    assert f"{path}:3:" in proc.stderr and "expected 91" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.delenv("GCNPRUNE_DATA_DIR", raising=False)
    proc = gcnprune("train", "--dataset", "fpha", "--out", str(tmp_path / "never"))
    assert proc.returncode == 2 and "GCNPRUNE_DATA_DIR" in proc.stderr


def test_eval_rejects_rate_for_dense(tmp_path):
    out = tmp_path / "run"
    gcnprune("train", "--epochs", "2", *TINY, "--out", str(out), check=True)
    proc = gcnprune("eval", "--checkpoint", str(out), "--rate", "0.9")
    assert proc.returncode == 2 and "--rate" in proc.stderr


def test_package_runs_as_a_module_and_gpu_script_parses():
    """`python -m gcnprune_jax` is the command (for checkouts without the entry point, as
    benchmarks/gpu.sh uses it), and the script itself is valid bash."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "gcnprune_jax", "prune", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--method" in proc.stdout
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
