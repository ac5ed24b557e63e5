"""The scripts under examples/ run (briefly) and print what their docstrings say."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stgcn_example_prunes_a_users_convolutional_model():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "stgcn.py"),
            *("--epochs", "4", "--channels", "4,8", "--rate", "0.8"),
            *("--methods", "pmp,tcmp"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("synthetic: 480 training / 240 test sequences")
    for method in ("pmp", "tcmp"):
        line = next(line for line in lines if line.strip().startswith(f"{method}:"))
        rate = float(re.search(r"realized rate (\d\.\d+)", line).group(1))
        assert abs(rate - 0.8) < 1e-3, line
        # the declared chain: dangling count, FLOPs, and the shrunk network's logits
        assert float(re.search(r"logits within (\S+)\)", line).group(1)) < 1e-5, line
        assert re.search(r"structured FLOPs \d\.\d{3} of dense, shrunk \d\.\d{3}", line), line
    assert " 0 dangling" in next(line for line in lines if line.strip().startswith("tcmp:"))
