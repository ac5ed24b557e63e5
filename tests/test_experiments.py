"""experiments/compare.py: the seeded grid, its committed ledger, resume and the tables."""

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
compare = pytest.importorskip("compare")

TINY = [
    "model.heads=2",
    "model.filters=[4]",
    "model.attention_dim=4",
    "model.fc=[16]",
    "train.epochs=2",
    "train.chunk_epochs=2",
]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    conf = {
        "name": "tiny",
        "dataset": "synthetic",
        "set": TINY,
        "methods": ["dense", "magnitude", "mrmp"],
        "rates": [0.5, 0.7],
        "seeds": [0, 1],
        "mrmp": {"train_rates": [0.5, 0.9], "serve_rates": [0.5, 0.7]},
    }
    path.write_text(f"def config():\n    return {conf!r}\n")
    return path


def run_main(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["compare.py", *args])
    compare.main()
    return capsys.readouterr().out


def test_grid_ledger_resume_and_tables(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    results, runs = tmp_path / "results", tmp_path / "runs"
    common = (str(config), "--out", str(runs), "--results", str(results))
    out = run_main(monkeypatch, capsys, *common)
    ledger = [
        json.loads(line)
        for line in (results / "ledger" / "tiny.jsonl").read_text().split("\n")
        if line
    ]
    # 2 seeds × (dense + magnitude at 2 rates + one mrmp training served at 2 rates)
    assert len(ledger) == 2 * (1 + 2 + 1 + 2)
    served = [r for r in ledger if r.get("served_rate") is not None]
    assert sorted((r["seed"], r["served_rate"]) for r in served) == [
        (0, 0.5),
        (0, 0.7),
        (1, 0.5),
        (1, 0.7),
    ]
    # 0.7 was never trained: the exact export still realizes it
    assert all(abs(r["realized_rate"] - r["served_rate"]) < 1e-3 for r in served)
    assert all("history" not in r and r["config"]["dataset"] == "synthetic" for r in ledger)

    md = (results / "tiny.md").read_text()
    acc = {r["params_digest"]: r["accuracy"] for r in ledger}
    assert len(acc) >= 4  # distinct runs, distinct parameters
    mags = [
        100 * r["accuracy"]
        for r in ledger
        if r["method"] == "magnitude" and r["target_rate"] == 0.5
    ]
    mean = sum(mags) / 2
    assert f"| magnitude | {mean:.2f} ± " in md and "(2)" in md
    assert "10 of the grid's 10 cells" in md
    rows = list(csv.DictReader((results / "tiny.csv").open()))
    assert len(rows) == 10 and {r["method"] for r in rows} == {"dense", "magnitude", "mrmp"}

    # A second invocation, even with the run directories gone, trains nothing: the ledger
    # (committed in the project) is the record of what is done.
    for path in sorted(runs.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    out = run_main(monkeypatch, capsys, *common)
    assert "(0 s training)" in out
    assert len((results / "ledger" / "tiny.jsonl").read_text().splitlines()) == len(ledger)
    assert (results / "tiny.md").read_text() == md


def test_ledger_matches_configs_up_to_ignored_options(tmp_path):
    conf = compare.load_config(str(write_config(tmp_path)))
    ledger = compare.Ledger(tmp_path / "l.jsonl")
    cfg = compare.cell_config(conf, "magnitude", 0.5, 0)
    ledger.add({"method": "magnitude", "config": cfg.to_dict()})
    # CTF's budget weight is not a magnitude option: the same run
    other = compare.with_overrides(cfg, ["pruning.budget_lambda=5.0"])
    assert compare.Ledger(tmp_path / "l.jsonl").find(other) is not None
    assert ledger.find(cfg.replace(seed=1)) is None
    assert ledger.find(cfg.replace(target_rate=0.7)) is None
    assert ledger.find(cfg, served_rate=0.5) is None


def test_two_ledgers_on_one_file_see_each_others_runs(tmp_path):
    # Two processes filling one grid (one per core): each one's tables must cover the other's
    # runs finished after it started, not only its own.
    conf = compare.load_config(str(write_config(tmp_path)))
    first, second = compare.Ledger(tmp_path / "l.jsonl"), compare.Ledger(tmp_path / "l.jsonl")
    cfg = compare.cell_config(conf, "magnitude", 0.5, 0)
    assert second.find(cfg) is None
    first.add({"method": "magnitude", "config": cfg.to_dict()})
    assert second.find(cfg) is not None
    assert len(second.records) == 1


def test_a_record_older_than_a_field_matches_only_that_fields_default(tmp_path):
    conf = compare.load_config(str(write_config(tmp_path)))
    cfg = compare.cell_config(conf, "mrmp", 0.9, 0)
    constant = compare.with_overrides(cfg, ["pruning.mu_end=null"])
    record = constant.to_dict()
    del record["pruning"]["mu_end"]  # written before the field existed: constant μ
    ledger = compare.Ledger(tmp_path / "l.jsonl")
    ledger.add({"method": "mrmp", "config": record})
    assert ledger.find(constant) is not None
    assert ledger.find(compare.with_overrides(cfg, ["pruning.mu_end=50"])) is None


def test_bad_config_and_ledger_lines_name_the_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def config():\n    return {'name': 'x'}\n")
    with pytest.raises(SystemExit, match="lacks"):
        compare.load_config(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"broken\.jsonl:2"):
        compare.Ledger(broken)


def test_block_diagonal_places_each_channel_on_the_diagonal():
    import numpy as np

    masks = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    image = compare.block_diagonal(masks)
    assert image.shape == (4, 6)
    assert (image[:2, :3] == masks[0]).all() and (image[2:, 3:] == masks[1]).all()
    assert np.isnan(image[:2, 3:]).all() and np.isnan(image[2:, :3]).all()


def test_claims_judge_each_claim_and_mark_the_pareto_front():
    import claims

    assert claims.pareto_front([(1.0, 90.0), (0.5, 91.0), (0.2, 80.0), (0.3, 70.0)]) == [
        (0.2, 80.0),
        (0.5, 91.0),
    ]

    def rec(method, rate, acc, flops, dangling=0):
        return {
            "method": method,
            "target_rate": rate,
            "realized_rate": rate,
            "accuracy": acc,
            "flops_structured": flops,
            "flops_dense": 100,
            "dangling_connections": dangling,
        }

    records = [
        rec("magnitude", 0.98, 0.90, 60),
        rec("ctf", 0.98, 0.89, 20),  # 1 point below at a third of the FLOPs: holds
        rec("tcmp", 0.98, 0.91, 30, dangling=3),  # better, but dangling: does not hold
        rec("ssp", 0.98, 0.92, 10),
    ]
    conf = {"rates": [0.98], "methods": ["magnitude", "ctf", "tcmp", "ssp"]}
    text = "\n".join(claims.claims("x", conf, claims.group(records)))
    ctf = next(line for line in text.splitlines() if line.startswith("| 0.98 | 89.00"))
    assert ctf.endswith("| holds (so far: 1 of 3 seeds) |")
    tcmp = next(line for line in text.splitlines() if "| 3 |" in line)
    assert tcmp.endswith("| does not hold (so far: 1 of 3 seeds) |")
    assert "| 0.98 | ssp 92.00 (n=1) | 90.00 (n=1) | holds (so far: 1 of 3 seeds) |" in text
    assert "| 0.99 | missing | missing | not yet measured |" in text
