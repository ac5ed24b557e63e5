"""A run's complete configuration: plain frozen dataclasses that round-trip through JSON.

`result.json["config"]` and the checkpoint record hold `RunConfig.to_dict()`, so any run can be
repeated (and resumed) from its output alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gcnprune_jax.data.features import FeatureConfig
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.models.gcn import GCNConfig
from gcnprune_jax.train import TrainConfig

DATASETS = ("synthetic", "sbu", "fpha")
SBU_FOLDS = 5
# INTERFACE.md's method names (docs/methods.md); `runner` says which are implemented.
METHODS = (
    "dense",
    "magnitude",
    "structured",
    "random",
    "snip",
    "ctf",
    "ssp",
    "tcmp",
    "pmp",
    "mrmp",
)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Hyper-parameters of the pruning methods (each method reads the ones it uses).

    granularities: CTF's enabled factors (docs/methods.md#ctf), a subset of channel, column, row,
      entry.
    alpha: threshold scale a_ℓ = α · rms(Ŵ_ℓ at init) (docs/methods.md#thresholds-and-temperature).
    kappa_start, kappa_end: the relative temperature κ_t's geometric schedule
      (docs/methods.md#budget-loss). κ_0 = 0.2, not the reconstructed papers' 0.5: with the budget
      warmup, 0.5 left CTF at r = 0.98 on SBU fold 1 overshooting to a soft rate of 0.996 (38%
      accuracy), 0.2 met it (0.979, 87%).
    budget_lambda: λ of the normalized budget loss (docs/methods.md#budget-loss). 1e3, not the
      reconstructed papers' 1e4: with the warmup, 1e4 let the budget's gradient swamp the
      cross-entropy (CTF at r = 0.99 on SBU, 5 folds: 29.1%); 1e3 gave 92.7% on fold 1 (1e2 missed
      the budget: soft rate 0.73).
    budget_warmup: the budget's target rate ramps (cubic) from 0 to r over this fraction of
      training; 0 = the reconstructed papers' constant target (see `pruning.shared.ramp_rate`).
    kappa_hold: hold κ at kappa_start during the warmup, anneal it over the rest.
    scope: magnitude pruning over the whole network ("global") or per tensor ("layerwise").
    structure: the groups structured pruning ranks: "column" (output units / filters),
      "row" (input connections) or "channel" (whole heads; an FC kernel is one channel).
    prune_at: magnitude and structured pruning train dense for this fraction of the epochs,
      prune, and fine-tune with the mask fixed for the rest (same total epochs,
      docs/methods.md#baselines).
    prior, alignment, mu: PMP's prior (gaussian, laplace, uniform), its alignment loss
      (wasserstein, kl) and that loss's weight (docs/methods.md#pmp).
    mu_end: None = a constant μ (docs/methods.md#pmp); a number = μ ramps geometrically from mu to
      mu_end over training (`pruning.pmp.alignment_weight`; PMP's default, see
      `method_defaults`).
    tau_h: TCMP's soft saturation h(x) = 1 − exp(−x / τ_h) of the (co-)accessibility
      networks during training (docs/methods.md#tcmp).
    rates: MRMP's training rates, all trained at once on one latent pytree (docs/methods.md#mrmp).
    rank_beta: SSP's β, weight of its normalized nuclear-norm rank surrogate (docs/methods.md#ssp);
      0 = the "no rank term" ablation.
    gate_tau_start, gate_tau_end: SSP's gate temperature schedule (geometric, held during
      the budget warmup like κ).
    gate_scale: SSP's gate logits are gate_scale × their trained state, so that they move
      faster than the weights under Adam (see `pruning.ssp.ssp`).
    zero_floor: CTF, SSP and TCMP use the band-stop rescaled to be exactly 0 at Ŵ = 0
      (`pruning.shared.band_stop`): the plain one's floor 2 s(−1/κ) puts a soft budget of
      more than 1 − 2 s(−1/κ) pruned out of reach while κ is high (docs/methods.md).
    budget_control: CTF, SSP, TCMP and PMP multiply every threshold by a common factor
      exp(control_speed · θ), θ a trained scalar whose gradient is the budget's relative
      excess (an integral controller, `pruning.shared.budget_control_term`): the soft count
      then meets the budget instead of stopping where the budget loss's pull equals the
      cross-entropy's. control_speed: θ moves about one learning rate per step under Adam,
      so the factor changes by about control_speed x lr per step.
    finetune: the learned methods (ctf, ssp, tcmp, pmp) train their soft masks for the
      first 1 − finetune of the epochs, export the crisp masks at the target rate, and
      fine-tune the weights with those masks fixed for the rest (same total epochs as every
      other method); 0 = evaluate straight after the export.
    consistent_export: CTF, PMP and MRMP (their default) export with TCMP's consistent export
      (docs/methods.md#tcmp): the c best-ranked entries that lie on an input→output path, so the
      whole budget is spent on live connections (SSP's export keeps its gates' structures instead;
      TCMP's is consistent already).
    prior_scope: PMP/MRMP's prior: "tensor" (one prior per tensor, scaled by its init rms,
      so every tensor is pruned at the same rate r) or "global" (one prior over all
      prunable weights with the pooled init rms, one threshold a(r) for the whole network,
      so the rate is allocated across tensors by magnitude, as global magnitude pruning).
    exclude: prunable parameters (by path, e.g. "classifier/kernel") that stay dense and out of
      the budget: the rate r applies to the other prunable weights (CTF's published budget
      sums over the layers ℓ = 1 … L−1, docs/methods.md: `exclude=("classifier/kernel",)`), so the
      realized rate over all prunable weights is below r. Every method but tcmp (its masks
      and export span the whole feature path) and the consistent export; () = prune all.
    """

    granularities: tuple[str, ...] = ("channel", "column", "row", "entry")
    alpha: float = 0.5
    kappa_start: float = 0.2
    kappa_end: float = 0.005
    budget_lambda: float = 1e3
    budget_warmup: float = 0.5
    kappa_hold: bool = True
    scope: str = "global"
    structure: str = "column"
    prune_at: float = 0.5
    prior: str = "gaussian"
    alignment: str = "wasserstein"
    mu: float = 1.0
    mu_end: float | None = None
    tau_h: float = 0.1
    rates: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)
    rank_beta: float = 1.0
    gate_tau_start: float = 1.0
    gate_tau_end: float = 0.01
    gate_scale: float = 10.0
    zero_floor: bool = False
    budget_control: bool = False
    control_speed: float = 10.0
    finetune: float = 0.0
    consistent_export: bool = False
    prior_scope: str = "tensor"
    exclude: tuple[str, ...] = ()

    def fields_used(self, method: str) -> tuple[str, ...]:
        """The fields `method` reads: two runs of one method that differ only elsewhere are
        the same computation (experiment scripts use this to reuse finished runs)."""
        schedule = (
            "alpha",
            "kappa_start",
            "kappa_end",
            "budget_lambda",
            "budget_warmup",
            "zero_floor",
            "budget_control",
            "control_speed",
            "finetune",
        )
        prior = (
            "prior",
            "alignment",
            "mu",
            "mu_end",
            "kappa_start",
            "kappa_end",
            "prior_scope",
            "consistent_export",
        )
        used = {
            "magnitude": ("scope", "prune_at"),
            "structured": ("structure", "prune_at"),
            "random": (),
            "snip": (),
            "ctf": ("granularities", *schedule, "kappa_hold", "consistent_export"),
            "ssp": (
                *schedule,
                "kappa_hold",
                "rank_beta",
                "gate_tau_start",
                "gate_tau_end",
                "gate_scale",
            ),
            "tcmp": (*schedule, "kappa_hold", "tau_h"),
            "pmp": (*prior, "finetune", "budget_control", "control_speed"),
            "mrmp": (*prior, "rates"),
        }
        if method not in used:
            return ()
        return used[method] + (() if method == "tcmp" else ("exclude",))

    def __post_init__(self) -> None:
        from gcnprune_jax.pruning.baselines import SCOPES, STRUCTURES
        from gcnprune_jax.pruning.shared import GRANULARITIES

        if not self.granularities or not set(self.granularities) <= set(GRANULARITIES):
            raise ConfigError(
                f"pruning.granularities must be values among {GRANULARITIES}, "
                f"got {list(self.granularities)}"
            )
        if not self.alpha > 0:
            raise ConfigError(f"pruning.alpha must be > 0, got {self.alpha}")
        if not 0 < self.kappa_end <= self.kappa_start:
            raise ConfigError(
                "pruning.kappa_end and pruning.kappa_start need 0 < end <= start, got "
                f"{self.kappa_end} and {self.kappa_start}"
            )
        if not self.budget_lambda >= 0:
            raise ConfigError(f"pruning.budget_lambda must be >= 0, got {self.budget_lambda}")
        if not 0.0 <= self.budget_warmup <= 1.0:
            raise ConfigError(f"pruning.budget_warmup must be in [0, 1], got {self.budget_warmup}")
        if self.scope not in SCOPES:
            raise ConfigError(f"pruning.scope must be one of {SCOPES}, got {self.scope!r}")
        if self.structure not in STRUCTURES:
            raise ConfigError(
                f"pruning.structure must be one of {STRUCTURES}, got {self.structure!r}"
            )
        from gcnprune_jax.pruning.pmp import ALIGNMENTS, PRIOR_SCOPES, PRIORS

        if self.prior not in PRIORS:
            raise ConfigError(f"pruning.prior must be one of {PRIORS}, got {self.prior!r}")
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(
                f"pruning.alignment must be one of {ALIGNMENTS}, got {self.alignment!r}"
            )
        if not self.rates or not all(0.0 < r < 1.0 for r in self.rates):
            raise ConfigError(f"pruning.rates must be rates in (0, 1), got {list(self.rates)}")
        if not self.tau_h > 0:
            raise ConfigError(f"pruning.tau_h must be > 0, got {self.tau_h}")
        if not self.mu >= 0:
            raise ConfigError(f"pruning.mu must be >= 0, got {self.mu}")
        if self.mu_end is not None and not (self.mu_end > 0 and self.mu > 0):
            raise ConfigError(
                "pruning.mu_end needs pruning.mu > 0 and mu_end > 0 (a geometric ramp from mu "
                f"to mu_end), got mu {self.mu} and mu_end {self.mu_end}"
            )
        if not 0.0 < self.prune_at < 1.0:
            raise ConfigError(f"pruning.prune_at must be in (0, 1), got {self.prune_at}")
        if not self.rank_beta >= 0:
            raise ConfigError(f"pruning.rank_beta must be >= 0, got {self.rank_beta}")
        if not 0 < self.gate_tau_end <= self.gate_tau_start:
            raise ConfigError(
                "pruning.gate_tau_end and pruning.gate_tau_start need 0 < end <= start, got "
                f"{self.gate_tau_end} and {self.gate_tau_start}"
            )
        if not self.gate_scale > 0:
            raise ConfigError(f"pruning.gate_scale must be > 0, got {self.gate_scale}")
        if not self.control_speed > 0:
            raise ConfigError(f"pruning.control_speed must be > 0, got {self.control_speed}")
        if not 0.0 <= self.finetune < 1.0:
            raise ConfigError(f"pruning.finetune must be in [0, 1), got {self.finetune}")
        if isinstance(self.exclude, str) or not all(
            isinstance(name, str) and name for name in self.exclude
        ):
            raise ConfigError(
                "pruning.exclude must be a list of parameter paths such as "
                f'["classifier/kernel"], got {self.exclude!r}'
            )
        if self.prior_scope not in PRIOR_SCOPES:
            raise ConfigError(
                f"pruning.prior_scope must be one of {PRIOR_SCOPES}, got {self.prior_scope!r}"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """dataset: "synthetic", "sbu" or "fpha". fold: "all" (SBU: the 5 folds of Yun et al.,
    trained together) or "1".."5" (SBU only); FPHA and synthetic have one official split.
    seed: initializes parameters and any shuffling; same seed and machine, same digest.
    data_seed: the synthetic dataset's generator seed (the data, not the training).
    method: one of METHODS; target_rate: the pruning rate r in [0, 1) (0 for dense).
    val_fraction: hold out this fraction of each training split (class-stratified, the same
      sequences whatever the seed) as a validation part: the run trains on the rest and
      reports `val_accuracy`; 0 = train on the whole training split. Tune on it, never on
      the test split.
    """

    dataset: str = "synthetic"
    fold: str = "all"
    seed: int = 0
    data_seed: int = 0
    method: str = "dense"
    target_rate: float = 0.0
    val_fraction: float = 0.0
    features: FeatureConfig = FeatureConfig()
    model: GCNConfig = GCNConfig()
    train: TrainConfig = TrainConfig()
    pruning: PruningConfig = PruningConfig()

    def __post_init__(self) -> None:
        check_method(self.method)
        if self.method == "dense" and self.target_rate != 0.0:
            raise ConfigError(f"--rate {self.target_rate}: the dense method prunes nothing")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.fold != "all":
            if self.dataset != "sbu":
                raise ConfigError(
                    f"--fold {self.fold} is only for SBU's 5-fold protocol; {self.dataset} "
                    "has one official train/test split (use --fold all)"
                )
            if self.fold not in {str(k) for k in range(1, SBU_FOLDS + 1)}:
                raise ConfigError(f"--fold must be 'all' or 1..{SBU_FOLDS}, got {self.fold!r}")
        if not 0.0 <= self.target_rate < 1.0:
            raise ConfigError(f"--rate must be in [0, 1), got {self.target_rate}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.pruning.consistent_export and self.method == "ssp":
            raise ConfigError(
                "--consistent-export: ssp's export keeps the structure each channel's gate chose; "
                "the consistent export is for ctf, pmp and mrmp (tcmp's export is consistent)"
            )
        if self.pruning.exclude and self.method == "tcmp":
            raise ConfigError(
                "pruning.exclude: tcmp's masks and export span the whole feature path "
                "(input to logits), so no prunable tensor can be left out of them"
            )
        baselines = ("dense", "magnitude", "structured", "random", "snip")
        if self.pruning.exclude and self.pruning.consistent_export and self.method not in baselines:
            raise ConfigError(
                "pruning.exclude: the consistent export spans the whole feature path; "
                "use one or the other (pruning.consistent_export=False, --no-consistent-export; "
                "on the command line --exclude turns off ctf's, pmp's and mrmp's default one)"
            )
        if self.pruning.finetune > 0 and self.method == "mrmp":
            raise ConfigError(
                "--finetune: mrmp serves every rate from one training, and fine-tuning would fix "
                "one rate's mask; use --finetune 0 with mrmp"
            )

    @property
    def folds(self) -> tuple[int, ...]:
        """0-based fold indices this run trains (one entry for FPHA and synthetic)."""
        if self.dataset != "sbu":
            return (0,)
        if self.fold == "all":
            return tuple(range(SBU_FOLDS))
        return (int(self.fold) - 1,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        sections = {
            "features": FeatureConfig,
            "model": GCNConfig,
            "train": TrainConfig,
            "pruning": PruningConfig,
        }
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            if name in sections:
                kwargs[name] = _build(sections[name], value)
            else:
                kwargs[name] = value
        return _build(cls, kwargs)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _build(cls: type, values: dict[str, Any]) -> Any:
    """Instantiate a config dataclass from JSON values (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


# Per-dataset defaults: the synthetic set is the quick embedded demo; the real datasets use
# the settings measured best in experiments/results/dense_ablation.md. SBU: which person acts
# is not fixed (train on both orders), its axes have different units (millimetres), and
# learned attention biased by the skeleton did best there. FPHA: attention restricted to
# skeleton neighbours (unconstrained attention overfits), randomly cropped, rotated and
# scaled training copies and dropout 0.5 (the author used neither: departures, measured).
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": {"train": {"epochs": 200, "chunk_epochs": 50}},
    "sbu": {
        "features": {"swap_persons": True, "millimetres": True},
        "model": {"attention": "softmax+adjacency"},
        "train": {"epochs": 300, "chunk_epochs": 50},
    },
    "fpha": {
        "features": {"augment_copies": 16},
        "model": {"dropout": 0.5},
        "train": {"epochs": 300, "chunk_epochs": 50},
    },
}


# Per-method pruning defaults over PruningConfig's, chosen on validation data only
# (experiments/tune.py: a class-stratified 20% of the training split held out, SBU fold 1 and
# FPHA with 4 augmented copies, seed 0, rates 0.95 / 0.98 / 0.99; the variant of best mean
# validation accuracy over both datasets; experiments/results/tuning_{sbu,fpha}.md and
# docs/methods.md have every trial):
# - ctf: zero-floor band-stop + fine-tuning for the last 30%. Over 0.95 / 0.98 / 0.99 both
#   scored 73.16 (against 71.58 for the former defaults); over the comparison grid's six
#   rates (0.5, 0.9, 0.95, 0.98, 0.99, 0.995) fine-tuning wins on both datasets (SBU 90.53
#   against 86.36, FPHA 52.23 against 51.44; at 0.995 on SBU 88.64 against 65.91);
# - ssp: fine-tuning + the budget controller (76.82; fine-tuning alone 73.28, the former
#   defaults 59.18): SBU 93.18 / 88.64 / 90.91 against 90.91 / 86.36 / 75.00, FPHA 66.14 /
#   64.57 / 57.48 against 66.93 / 65.35 / 55.12; it meets the budget (soft rate within
#   0.0007 of the target) where fine-tuning alone ended up to 0.8 points short;
# - tcmp: zero floor + budget controller + fine-tuning (74.92 against 71.95); κ_0 = 0.5 and
#   λ = 3e3 stay TCMP's own: with CTF's 0.2 and 1e3 its soft rate stalled at 0.83 whatever
#   the target (FPHA);
# - pmp: one global prior + fine-tuning for the last half (79.78 against 33.33; 79.63 with
#   the last 30%, a margin within the noise of 44 + 127 validation sequences); the alignment
#   weight ramps
#   from μ = 1 to 100 (`pruning.pmp.alignment_weight`): with a constant μ its soft rate ended
#   short of the target by up to 3.3 points;
# - mrmp: one global prior (66.48 against 59.54), μ constant as it was measured with;
# - pmp and mrmp: the binned alignment (ranks from a histogram instead of a sort): the same
#   validation accuracy (PMP 80.16 against 79.78, MRMP 66.82 against 66.48) at a sixth of
#   PMP's train-step time (docs/methods.md, "binned alignment"); PMP with the budget
#   controller meets its budget but scored 76.76 against 80.16, so it stays off.
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ctf": {"zero_floor": True, "finetune": 0.3, "consistent_export": True},
    "ssp": {"finetune": 0.3, "budget_control": True},
    "tcmp": {
        "kappa_start": 0.5,
        "budget_lambda": 3e3,
        "zero_floor": True,
        "budget_control": True,
        "finetune": 0.3,
    },
    "pmp": {
        "mu_end": 100.0,
        "prior_scope": "global",
        "finetune": 0.5,
        "alignment": "wasserstein_binned",
        "consistent_export": True,
    },
    "mrmp": {"prior_scope": "global", "alignment": "wasserstein_binned", "consistent_export": True},
}


def check_method(method: str) -> None:
    """A method name is INTERFACE.md's (`METHODS`) or registered with `pruning.api.register`
    (a user's own learned method, trained by name with its factory's defaults)."""
    if method in METHODS:
        return
    from gcnprune_jax.pruning import api  # lazily: the registry imports the methods

    if method not in api.names():
        raise ConfigError(f"--method must be one of {api.names()}, got {method!r}")


def method_defaults(method: str) -> dict[str, Any]:
    """The PruningConfig fields whose default differs for `method` (empty for most)."""
    return dict(_METHOD_DEFAULTS.get(method, {}))


def default_config(dataset: str, method: str = "dense") -> RunConfig:
    """The default RunConfig of a dataset (what `gcnprune train --dataset D` runs), with the
    pruning defaults of `method` (`method_defaults`); the method itself is set by the caller
    (`cfg.replace(method=..., target_rate=...)`)."""
    if dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    check_method(method)
    base = RunConfig(dataset=dataset)
    overrides = _DATASET_DEFAULTS[dataset]
    cfg = base.replace(
        **{
            section: dataclasses.replace(getattr(base, section), **values)
            for section, values in overrides.items()
        }
    )
    return cfg.replace(pruning=dataclasses.replace(cfg.pruning, **method_defaults(method)))
