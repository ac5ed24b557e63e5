"""`python -m gcnprune_jax ...`: the `gcnprune` command without an installed entry point
(e.g. with `PYTHONPATH=.` from a checkout)."""

import sys

from gcnprune_jax.cli import main

sys.exit(main())
