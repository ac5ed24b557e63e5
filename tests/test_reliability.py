"""Kill anywhere, resume, get the uninterrupted parameters; injected faults stop a run cleanly.

Every interruption happens at a deterministic point (`gcnprune_jax.faults`, the environment
variable GCNPRUNE_FAULT), never after a sleep: SIGKILL after a training piece, SIGKILL while a
checkpoint is being written, SIGINT (Ctrl-C), a non-finite loss, a full or read-only disk.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gcnprune_jax import cli, faults
from gcnprune_jax.checkpoint import Checkpointer

TINY = ["--heads", "2", "--filters", "4", "--attention-dim", "4", "--fc", "16"]
# 40 epochs in chunks of 20 and pieces of 10: pieces end at 10, 20 (magnitude prunes here),
# 30, 40; with --checkpoint-every-s 0 a checkpoint follows every piece.
MAGNITUDE = [
    "prune", "--method", "magnitude", "--rate", "0.9", "--epochs", "40",
    "--chunk-epochs", "20", "--checkpoint-every-s", "0", *TINY,
]  # fmt: skip
# CTF with fine-tuning: soft masks for 20 epochs, the exact export fixes them at epoch 20.
CTF = [
    "prune", "--method", "ctf", "--finetune", "0.5", "--rate", "0.9", "--epochs", "40",
    "--chunk-epochs", "20", "--checkpoint-every-s", "0", *TINY,
]  # fmt: skip
# Seeded choice of kill points among the events of the magnitude run (4 pieces, 4 writes).
CANDIDATES = [f"kill:piece:{n}" for n in (2, 3, 4)] + [f"kill:save:{n}" for n in (2, 3, 4)]
KILL_POINTS = [
    "kill:piece:1",  # before the first chunk ends, before any checkpoint
    "kill:save:1",  # during the first checkpoint write: nothing complete on disk
    *random.Random(26).sample(CANDIDATES, 2),
]


def run_in_process(args, out, *, fault=None, monkeypatch):
    """cli.main in this process (fast: JAX is already imported); returns its exit status."""
    if fault is None:
        monkeypatch.delenv(faults.ENV, raising=False)
    else:
        monkeypatch.setenv(faults.ENV, fault)
    faults.reset()
    try:
        return cli.main([*args, "--out", str(out)])
    finally:
        monkeypatch.delenv(faults.ENV, raising=False)
        faults.reset()


def run_subprocess(args, out, *, fault):
    """The CLI in a child process that `fault` kills; returns (exit status, stderr)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        faults.ENV: fault,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gcnprune_jax.cli", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    return proc.returncode, proc.stderr


def digest(out):
    return json.loads((Path(out) / "result.json").read_text())["params_digest"]


def completed_epochs(out):
    ckpt = Path(out) / "checkpoint"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Digests of the uninterrupted magnitude and CTF runs."""
    with pytest.MonkeyPatch.context() as mp:
        out = {}
        for name, args in (("magnitude", MAGNITUDE), ("ctf", CTF)):
            path = tmp_path_factory.mktemp(name)
            assert run_in_process(args, path, monkeypatch=mp) == 0
            out[name] = digest(path)
    return out


@pytest.mark.parametrize("fault", KILL_POINTS)
def test_sigkill_then_resume_gives_the_uninterrupted_digest(
    fault, uninterrupted, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    status, _ = run_subprocess(MAGNITUDE, out, fault=fault)
    assert status == -signal.SIGKILL, f"{fault}: the run was not killed (status {status})"
    assert not (out / "result.json").exists()
    before = completed_epochs(out)
    if fault == "kill:piece:1":
        assert before == []  # the kill came before any checkpoint
    # (A kill during a write may land before or after Orbax renamed the finished files into
    # place, so the latest checkpoint is the previous one or this one: either must resume.)
    assert run_in_process([*MAGNITUDE, "--resume"], out, monkeypatch=monkeypatch) == 0
    assert digest(out) == uninterrupted["magnitude"], f"{fault}: resumed from {before}"


def test_killed_twice_and_interrupted_once(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    # Killed after the piece that ends at epoch 30, before its checkpoint (10 and 20 kept).
    status, _ = run_subprocess(MAGNITUDE, out, fault="kill:piece:3")
    assert status == -signal.SIGKILL and completed_epochs(out) == [10, 20]
    # The resumed run is killed again while it writes the checkpoint of epoch 30.
    status, _ = run_subprocess([*MAGNITUDE, "--resume"], out, fault="kill:save:1")
    assert status == -signal.SIGKILL
    # Ctrl-C after the next piece: the state in memory is saved before the exit (epoch 30
    # whether the killed write had completed or not).
    assert run_in_process([*MAGNITUDE, "--resume"], out, fault="interrupt:piece:1",
                          monkeypatch=monkeypatch) == 130  # fmt: skip
    assert "interrupted after epoch" in capsys.readouterr().err
    assert completed_epochs(out)[-1] == 30
    assert run_in_process([*MAGNITUDE, "--resume"], out, monkeypatch=monkeypatch) == 0
    assert digest(out) == uninterrupted["magnitude"]


def test_learned_method_killed_at_the_export_resumes_exactly(uninterrupted, tmp_path, monkeypatch):
    """The second write holds the state just after the exact export fixed the masks (epoch
    20): killed during it, the run resumes either from the soft phase (epoch 10) and
    exports again, or from the fixed-mask state."""
    out = tmp_path / "run"
    status, _ = run_subprocess(CTF, out, fault="kill:save:2")
    assert status == -signal.SIGKILL
    assert run_in_process([*CTF, "--resume"], out, monkeypatch=monkeypatch) == 0
    assert digest(out) == uninterrupted["ctf"]


def test_train_time_accumulates_across_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run_in_process(MAGNITUDE, out, fault="interrupt:piece:3", monkeypatch=monkeypatch) == 130
    first = Checkpointer(out / "checkpoint")
    part = first.read_record()["train_time_s"]
    first.close()
    assert part > 0
    assert run_in_process([*MAGNITUDE, "--resume"], out, monkeypatch=monkeypatch) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["train_time_s"] > part


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    # The piece after the third (epochs 31-40) starts from poisoned weights.
    assert run_in_process(MAGNITUDE, out, fault="nan:piece:3", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 31" in err and "checkpoint (epoch 30)" in err
    assert completed_epochs(out)[-1] == 30 and not (out / "result.json").exists()
    # The kept checkpoint is good: resuming without the fault finishes the run exactly.
    assert run_in_process([*MAGNITUDE, "--resume"], out, monkeypatch=monkeypatch) == 0
    assert digest(out) == uninterrupted["magnitude"]


@pytest.mark.parametrize("fault", ["enospc:write:2", "erofs:write:1"])
def test_failed_checkpoint_write_is_a_clear_error(
    fault, uninterrupted, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    assert run_in_process(MAGNITUDE, out, fault=fault, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    reason = "No space left on device" if fault.startswith("enospc") else "Read-only file system"
    assert "Traceback" not in err and reason in err and "--resume" in err
    kept = completed_epochs(out)
    assert kept == ([10] if fault == "enospc:write:2" else [])
    assert run_in_process([*MAGNITUDE, "--resume"], out, monkeypatch=monkeypatch) == 0
    assert digest(out) == uninterrupted["magnitude"]


def test_out_that_is_a_file_is_an_exit_2_error(tmp_path, monkeypatch, capsys):
    target = tmp_path / "a_file"
    target.write_text("not a run\n")
    assert run_in_process(MAGNITUDE, target, monkeypatch=monkeypatch) == 2
    assert "is a file" in capsys.readouterr().err
    assert run_in_process(MAGNITUDE, target / "sub", monkeypatch=monkeypatch) == 2
    assert "has a file in its path" in capsys.readouterr().err
    assert target.read_text() == "not a run\n"


def test_data_dir_with_synthetic_data_is_an_error(tmp_path, monkeypatch, capsys):
    assert run_in_process([*MAGNITUDE, "--data-dir", str(tmp_path)], tmp_path / "r",
                          monkeypatch=monkeypatch) == 2  # fmt: skip
    assert "synthetic dataset is generated" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_without_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = [*MAGNITUDE[:7], "--epochs", "10", *TINY, "--resume"]
    assert run_in_process(args, out, monkeypatch=monkeypatch) == 0
    assert "no checkpoint in" in capsys.readouterr().err


def test_bad_fault_specification_is_refused(monkeypatch):
    monkeypatch.setenv(faults.ENV, "explode:piece:1")
    with pytest.raises(ValueError, match="ACTION:EVENT:N"):
        faults.hit("piece")
    faults.reset()


def test_eval_and_export_remember_the_data_directory(tmp_path, monkeypatch, capsys):
    """A real-data run records its data directory; eval and export find the data without
    --data-dir or $GCNPRUNE_DATA_DIR, and --data-dir still overrides it."""
    env = os.environ.get("GCNPRUNE_DATA_DIR")
    if not env:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("GCNPRUNE_DATA_DIR is not set; CI must run the real-data tests")
        pytest.skip("GCNPRUNE_DATA_DIR is not set")
    sbu = Path(env) / "sbu"
    out = tmp_path / "run"
    args = ["prune", "--dataset", "sbu", "--fold", "1", "--method", "magnitude", "--rate",
            "0.5", "--epochs", "2", *TINY, "--data-dir", str(sbu)]  # fmt: skip
    assert run_in_process(args, out, monkeypatch=monkeypatch) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["data_dir"] == str(sbu.absolute())
    capsys.readouterr()
    monkeypatch.delenv("GCNPRUNE_DATA_DIR")
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == result["accuracy"]
    assert cli.main(["export", "--checkpoint", str(out), "--batch", "4"]) == 0
    assert cli.main(["eval", "--checkpoint", str(out), "--data-dir", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
