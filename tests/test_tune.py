"""experiments/tune.py: choices are made on validation accuracy only, ties keep the default."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import tune


def _row(method, variant, rate, acc):
    return {
        "id": tune.trial_id(method, variant, rate),
        "method": method,
        "variant": variant,
        "rate": rate,
        "val_accuracy": acc,
    }


def test_choices_use_validation_accuracy_and_keep_the_default_on_ties(tmp_path):
    ledger = tmp_path / "tuning"
    ledger.mkdir()
    rates = (0.95, 0.98)
    ctf_rates = tune.CHOICE_RATES["ctf"]  # CTF is chosen over every rate of the grid
    sbu = (
        [_row("ctf", "default", r, 0.8) for r in ctf_rates]
        + [
            _row("ctf", "zf", r, 0.8)
            for r in ctf_rates  # a tie: the default stays
        ]
        + [_row("ctf", "zf+bc", r, 0.9) for r in rates]  # better, but misses CTF's other rates
        + [_row("pmp", "default", r, 0.5) for r in rates]
        + [_row("pmp", "global", r, 0.7) for r in rates]
        + [_row("tcmp", "zf", 0.95, 0.99)]
    )  # a missing rate: not eligible
    fpha = [{**r, "val_accuracy": r["val_accuracy"] - 0.1} for r in sbu]
    for name, rows in (("sbu", sbu), ("fpha", fpha)):
        (ledger / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = tune.read_ledger(ledger / "sbu.jsonl")
    assert tune.choose(rows, rates) == {"ctf": "default", "pmp": "global"}
    both = tune.combined_choice(tmp_path, rates)
    assert {m: v for m, (v, _) in both.items()} == {"ctf": "default", "pmp": "global"}
    assert abs(both["pmp"][1] - 0.65) < 1e-9
    # the ledger never records test accuracy, so nothing can be chosen on it
    assert "accuracy" not in tune.LEDGER_KEYS and "val_accuracy" in tune.LEDGER_KEYS
    tune.write_report("sbu", rows, tmp_path / "tuning_sbu.md", "python experiments/tune.py")
    text = (tmp_path / "tuning_sbu.md").read_text()
    assert "| pmp | global | – | – | 70.00 | 70.00 |" in text  # no trial at 0.5 or 0.9
