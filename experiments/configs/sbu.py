"""SBU Kinect Interaction: every method at every rate over three seeds, with the settings
chosen on validation data (issue 22's grid).

    GCNPRUNE_DATA_DIR=../shared/data python experiments/compare.py experiments/configs/sbu.py

5-fold cross-validation (Yun et al.), the dataset's defaults, 300 epochs per run. Every
method runs with the library's defaults, which are the variants `experiments/tune.py` chose
on validation data (experiments/results/tuning_sbu.md, tuning_fpha.md; docs/methods.md):
nothing here was chosen on the test folds. The grid of the earlier defaults is
configs/sbu_v1_test_tuned.py.
"""

from __future__ import annotations

from typing import Any

RATES = [0.5, 0.9, 0.95, 0.98, 0.99, 0.995]


def config() -> dict[str, Any]:
    return {
        "name": "sbu",
        "dataset": "sbu",
        "set": [],  # "section.field=value" overrides of the dataset's defaults
        "methods": ["dense", "magnitude", "structured", "ctf", "ssp", "tcmp", "pmp", "mrmp"],
        "rates": RATES,
        "seeds": [0, 1, 2],
        # MRMP: one training per seed on all of these rates at once, served at `serve_rates`
        # by an exact export (`gcnprune eval --rate R`), never retrained.
        "mrmp": {"train_rates": [0.5, 0.7, *RATES[1:]], "serve_rates": RATES},
        # Figure 2 of the CTF paper: masks of the attention and convolution tensors.
        "mask_pictures": {
            "methods": ["structured", "magnitude", "ctf", "ssp"],
            "rates": [0.9, 0.95, 0.98],
            "seed": 0,
        },
    }
