"""FPHA: every method at every rate over three seeds, with the settings chosen on validation
data (issue 22's grid).

    GCNPRUNE_DATA_DIR=../shared/data python experiments/compare.py experiments/configs/fpha.py

Official 600 / 575 split, 300 epochs per run, 4 augmented training copies per sequence (as
the tuning ran; the default is 16, about 4.5x the time per run). Every method runs with the
library's defaults, which are the variants `experiments/tune.py` chose on validation data
(experiments/results/tuning_sbu.md, tuning_fpha.md; docs/methods.md): nothing here was chosen
on the test split. The grid of the earlier defaults is configs/fpha_v1_test_tuned.py.
"""

from __future__ import annotations

from typing import Any

RATES = [0.5, 0.9, 0.95, 0.98, 0.99, 0.995]


def config() -> dict[str, Any]:
    return {
        "name": "fpha",
        "dataset": "fpha",
        "set": ["features.augment_copies=4"],
        "methods": ["dense", "magnitude", "structured", "ctf", "ssp", "tcmp", "pmp", "mrmp"],
        "rates": RATES,
        "seeds": [0, 1, 2],
        "mrmp": {"train_rates": [0.5, 0.7, *RATES[1:]], "serve_rates": RATES},
        "mask_pictures": {
            "methods": ["structured", "magnitude", "ctf", "ssp"],
            "rates": [0.9, 0.95, 0.98],
            "seed": 0,
        },
    }
