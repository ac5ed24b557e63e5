"""The `gcnprune` command line (INTERFACE.md). A thin shell: parse, configure, report.

Errors a user can fix (bad files, impossible options) exit with status 2 and one paragraph
naming what is at fault; no traceback reaches the terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from gcnprune_jax.errors import GcnpruneError
from gcnprune_jax.models.gcn import ATTENTIONS

EXIT_USAGE = 2


class LineReporter:
    """Plain periodic progress lines, for logs and pipes."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.total = 0
        self.t0 = 0.0
        self.first = 0

    def start(self, total_epochs: int, first_epoch: int, description: str) -> None:
        self.total, self.first, self.t0 = total_epochs, first_epoch, time.perf_counter()
        where = f" (resuming at epoch {first_epoch})" if first_epoch else ""
        print(f"{description}: {total_epochs} epochs{where}", file=self.stream, flush=True)

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (epoch - self.first) / max(elapsed, 1e-9)
        print(
            f"epoch {epoch}/{self.total}  loss {metrics['loss']:.4g}  "
            f"train acc {metrics['train_accuracy']:.3f}  {rate:.1f} epochs/s",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass


class BarReporter:
    """A tqdm progress bar, for terminals."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, total_epochs: int, first_epoch: int, description: str) -> None:
        from tqdm import tqdm

        # A pseudo-terminal that reports size 0 x 0 would get an empty, hidden bar.
        size = shutil.get_terminal_size((80, 24))
        self.bar = tqdm(
            total=total_epochs,
            initial=first_epoch,
            desc=description,
            unit="epoch",
            ncols=size.columns if size.columns > 0 else 80,
            nrows=size.lines if size.lines > 0 else 24,
        )

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(
            loss=f"{metrics['loss']:.3g}", train_acc=f"{metrics['train_accuracy']:.3f}"
        )
        self.bar.update(epoch - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _reporter() -> Any:
    return BarReporter() if sys.stderr.isatty() else LineReporter()


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _str_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one comma-separated value")
    return values


def _add_pruning_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pruning (docs/methods.md; each method reads the options it uses)")
    g.add_argument(
        "--method",
        required=True,
        help="dense, magnitude, structured, random, snip, ctf, ssp, tcmp, pmp, mrmp",
    )
    g.add_argument(
        "--rate",
        type=float,
        required=True,
        dest="target_rate",
        help="pruning rate r in [0, 1): the fraction of prunable weights removed",
    )
    g.add_argument(
        "--granularities",
        type=_str_list,
        help="ctf: enabled mask factors, e.g. entry or row,column",
    )
    g.add_argument("--alpha", type=float, help="threshold a = alpha * rms(W at init)")
    g.add_argument("--kappa-start", type=float, help="initial relative temperature")
    g.add_argument("--kappa-end", type=float, help="final relative temperature")
    g.add_argument("--budget-lambda", type=float, help="weight of the budget loss")
    g.add_argument(
        "--budget-warmup",
        type=float,
        help="fraction of training over which the budget's rate ramps from 0 to --rate",
    )
    g.add_argument(
        "--kappa-hold",
        action=argparse.BooleanOptionalAction,
        help="hold the temperature during the budget warmup, anneal it afterwards",
    )
    g.add_argument(
        "--scope",
        choices=("global", "layerwise"),
        help="magnitude: rank over the net or per tensor",
    )
    g.add_argument(
        "--structure",
        choices=("column", "row", "channel"),
        help="structured: the groups ranked by RMS",
    )
    g.add_argument("--prior", choices=("gaussian", "laplace", "uniform"), help="pmp: the prior")
    g.add_argument(
        "--alignment",
        choices=("wasserstein", "wasserstein_binned", "kl"),
        help="pmp/mrmp: distribution alignment loss (wasserstein_binned: ranks from a histogram, "
        "no sort)",
    )
    g.add_argument("--mu", type=float, help="pmp/mrmp: weight of the alignment loss")
    g.add_argument(
        "--mu-end",
        type=float,
        help="pmp/mrmp: the alignment weight at the end of training, ramped geometrically "
        "from --mu (give --mu's value for a constant weight)",
    )
    g.add_argument(
        "--rates", type=_float_list, help="mrmp: the rates trained at once, e.g. 0.5,0.9,0.99"
    )
    g.add_argument(
        "--tau-h", type=float, help="tcmp: temperature of the soft (co-)accessibility saturation"
    )
    g.add_argument(
        "--rank-beta", type=float, help="ssp: weight of the nuclear-norm rank surrogate (0: off)"
    )
    g.add_argument("--gate-tau-start", type=float, help="ssp: initial gate temperature")
    g.add_argument("--gate-tau-end", type=float, help="ssp: final gate temperature")
    g.add_argument(
        "--gate-scale", type=float, help="ssp: gate logits = scale x trained state (gate speed)"
    )
    g.add_argument(
        "--zero-floor",
        action=argparse.BooleanOptionalAction,
        help="ctf/ssp/tcmp: band-stop rescaled to be exactly 0 at W = 0 at every temperature",
    )
    g.add_argument(
        "--budget-control",
        action=argparse.BooleanOptionalAction,
        help="ctf/ssp/tcmp/pmp: a trained common threshold factor driven by the budget's "
        "excess (meets the budget exactly)",
    )
    g.add_argument(
        "--control-speed",
        type=float,
        help="ctf/ssp/tcmp/pmp: how fast the budget controller's threshold factor moves",
    )
    g.add_argument(
        "--finetune",
        type=float,
        help="ctf/ssp/tcmp/pmp: fraction of the epochs spent fine-tuning with the exported "
        "crisp masks fixed (0: none)",
    )
    g.add_argument(
        "--consistent-export",
        action=argparse.BooleanOptionalAction,
        help="ctf/pmp/mrmp: export only connections on an input->output path (no dangling)",
    )
    g.add_argument(
        "--prior-scope",
        choices=("tensor", "global"),
        help="pmp/mrmp: one prior per tensor (same rate everywhere) or one over the network",
    )
    g.add_argument(
        "--exclude",
        type=_str_list,
        help="prunable tensors kept dense and out of the budget, e.g. classifier/kernel "
        "(the rate applies to the others; not tcmp; turns off the consistent export)",
    )
    g.add_argument(
        "--prune-at",
        type=float,
        help="magnitude/structured: fraction of the epochs trained dense before pruning",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--dataset",
        choices=("synthetic", "sbu", "fpha"),
        default="synthetic",
        help="synthetic is embedded and needs no files (default: %(default)s)",
    )
    g.add_argument(
        "--data-dir", help="the dataset's root directory (default: $GCNPRUNE_DATA_DIR/<dataset>)"
    )
    g.add_argument(
        "--fold", default="all", help="SBU: 'all' (5-fold mean) or 1..5 (default: %(default)s)"
    )
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    g.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="synthetic data generator seed (default: %(default)s)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this class-stratified fraction of the training split as validation "
        "data and report val_accuracy (tune on it, not on the test split; default: "
        "%(default)s)",
    )
    g.add_argument("--out", help="output directory (default: runs/<dataset>_<method>_s<seed>)")
    g.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    g.add_argument(
        "--checkpoint-every-s",
        type=float,
        default=60.0,
        help="also checkpoint inside a chunk once this many seconds have passed since the last "
        "checkpoint (0: after every piece of 10 epochs; a kill loses at most this interval "
        "plus one piece; default: %(default)s)",
    )

    f = p.add_argument_group("node signals (docs/methods.md#the-gcn)")
    f.add_argument("--chunks", type=int, help="temporal chunks per sequence")
    f.add_argument("--center", choices=("none", "sequence", "first_frame", "hand_frame"))
    f.add_argument(
        "--person-order",
        choices=("as_is", "motion"),
        help="SBU: keep A/B as in the files, or put the actor (most motion) first",
    )
    f.add_argument(
        "--velocities",
        action=argparse.BooleanOptionalAction,
        help="append per-chunk mean velocities",
    )
    f.add_argument(
        "--swap-persons",
        action=argparse.BooleanOptionalAction,
        help="SBU: also train on each sequence with its two persons swapped",
    )
    f.add_argument(
        "--millimetres",
        action=argparse.BooleanOptionalAction,
        help="SBU: undo the anisotropic normalization (physical mm)",
    )
    f.add_argument("--augment-copies", type=int, help="random training copies per sequence")
    f.add_argument("--augment-rotation-deg", type=float, help="largest random rotation")
    f.add_argument("--augment-scale", type=float, help="random scale in [1 - s, 1 + s]")
    f.add_argument("--augment-crop", type=float, help="smallest kept fraction of the frames")
    f.add_argument("--standardize", choices=("global", "isotropic", "per_feature", "none"))

    m = p.add_argument_group("model")
    m.add_argument("--heads", type=int)
    m.add_argument("--filters", type=_int_list, help="filters per head for each block, e.g. 16,16")
    m.add_argument("--attention-dim", type=int)
    m.add_argument("--fc", type=_int_list, help="fully connected sizes, e.g. 256")
    m.add_argument("--attention", choices=ATTENTIONS, help="how each head's attention is formed")
    m.add_argument("--dropout", type=float)

    t = p.add_argument_group("optimization")
    t.add_argument("--lr", type=float, dest="learning_rate")
    t.add_argument(
        "--schedule",
        choices=("adaptive", "adaptive2", "constant", "cosine"),
        help="adaptive: x0.99 when the loss rose, /0.99 otherwise; adaptive2: the same on the "
        "loss's temporal derivative (docs/methods.md)",
    )
    t.add_argument("--batch-size", type=int, help="0 = full batch")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument(
        "--chunk-epochs",
        type=int,
        help="epochs per compiled chunk (checkpoint and progress interval)",
    )


def _describe_defaults(parser: argparse.ArgumentParser) -> None:
    """Append each hyper-parameter's default (per dataset where they differ) to its help."""
    from gcnprune_jax.config import DATASETS, METHODS, default_config, method_defaults

    configs = {d: default_config(d) for d in DATASETS}
    for action in parser._actions:
        for section in ("features", "model", "train", "pruning"):
            section_cfg = getattr(configs["synthetic"], section)
            if action.dest not in {fld.name for fld in dataclasses.fields(section_cfg)}:
                continue
            values = {d: getattr(getattr(c, section), action.dest) for d, c in configs.items()}
            shown = {
                d: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
                for d, v in values.items()
            }
            if len(set(shown.values())) == 1:
                text = f"default: {shown['synthetic']}"
            else:
                text = "default: " + ", ".join(f"{d} {v}" for d, v in shown.items())
            if section == "pruning":
                text += "".join(
                    f"; {m} {method_defaults(m)[action.dest]}"
                    for m in METHODS
                    if action.dest in method_defaults(m)
                )
            action.help = f"{action.help}; {text}" if action.help else text


def config_from_args(args: argparse.Namespace) -> Any:
    """The RunConfig of the parsed options over the dataset's defaults."""
    from gcnprune_jax.config import default_config

    method = getattr(args, "method", None) or "dense"
    cfg = default_config(args.dataset, method)
    sections: dict[str, dict[str, Any]] = {"features": {}, "model": {}, "train": {}, "pruning": {}}
    for section in sections:
        names = {fld.name for fld in dataclasses.fields(getattr(cfg, section))}
        for name in names:
            value = getattr(args, name, None)
            if value is not None:
                sections[section][name] = value
    pruning = sections["pruning"]
    if pruning.get("exclude") and "consistent_export" not in pruning:
        # the consistent export (ctf's, pmp's and mrmp's default) spans every prunable tensor, so
        # --exclude turns it off unless --consistent-export asks for both (a clear error)
        pruning["consistent_export"] = False
    return cfg.replace(
        fold=args.fold,
        seed=args.seed,
        data_seed=args.data_seed,
        val_fraction=getattr(args, "val_fraction", 0.0),
        method=method,
        target_rate=getattr(args, "target_rate", None) or 0.0,
        pruning=dataclasses.replace(cfg.pruning, **sections["pruning"]),
        features=dataclasses.replace(cfg.features, **sections["features"]),
        model=dataclasses.replace(cfg.model, **sections["model"]),
        train=dataclasses.replace(cfg.train, **sections["train"]),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from gcnprune_jax.runner import run_training

    cfg = config_from_args(args)
    _check_data_dir(args)
    if args.checkpoint_every_s < 0:
        raise _usage_error(f"--checkpoint-every-s {args.checkpoint_every_s}: expected >= 0")
    rate = f"_r{cfg.target_rate:g}" if cfg.method != "dense" else ""
    out = args.out or f"runs/{cfg.dataset}_{cfg.method}{rate}_s{cfg.seed}"
    result = run_training(
        cfg,
        out,
        data_dir=args.data_dir,
        resume=args.resume,
        reporter=_reporter(),
        checkpoint_every_s=args.checkpoint_every_s,
    )
    folds = ", ".join(f"{a:.4f}" for a in result["fold_accuracies"])
    pruned = ""
    if cfg.method != "dense":
        pruned = (
            f", realized rate {result['realized_rate']:.4f} (soft {result['soft_rate']:.4f}), "
            f"structured FLOPs {result['flops_structured'] / result['flops_dense']:.3f} of dense, "
            f"{result['dangling_connections']} dangling"
        )
    if "val_accuracy" in result:
        pruned += f", validation accuracy {result['val_accuracy']:.4f}"
    print(
        f"{cfg.dataset} {cfg.method}: accuracy {result['accuracy']:.4f} (folds: {folds}), "
        f"{result['params_kept']}/{result['params_total']} prunable weights kept{pruned}, "
        f"{result['wall_time_s']:.1f} s; wrote {out}/result.json"
    )
    return 0


def _check_data_dir(args: argparse.Namespace) -> None:
    if args.dataset == "synthetic" and args.data_dir is not None:
        raise _usage_error(
            f"--data-dir {args.data_dir}: the synthetic dataset is generated in memory and "
            "reads no files (its generator seed is --data-seed); drop --data-dir, or choose "
            "--dataset sbu or fpha"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from gcnprune_jax.runner import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, rate=args.rate)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "dataset",
                    "method",
                    "target_rate",
                    "realized_rate",
                    "accuracy",
                    "fold_accuracies",
                    "params_kept",
                    "params_total",
                    "flops_structured",
                    "dangling_connections",
                    "epochs",
                    "params_digest",
                )
            },
            indent=2,
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gcnprune_jax.bench import export_run

    out = args.out or str(_run_path(args.checkpoint) / "compact")
    infos = export_run(
        args.checkpoint, out, data_dir=args.data_dir, batch=args.batch, formats=args.format
    )
    for info in infos:
        print(
            f"fold {info['fold']}: FLOPs "
            f"{info['flops_compact'] / info['flops_dense']:.3f} of dense "
            f"({info['flops_compact']} of {info['flops_dense']}; structured count "
            f"{info['flops_structured'] / info['flops_dense']:.3f} of dense), max relative error "
            f"{info['max_relative_error']:.1e}, layouts chosen at batch {info['layout_batch']} "
            f"on {info['backend']}; wrote {info['directory']}"
        )
        for fmt, item in info.get("portable", {}).items():
            print(
                f"fold {info['fold']}: {fmt} {info['directory']}/{item['file']} "
                f"({item['bytes']} bytes), max relative error {item['max_relative_error']:.1e} "
                "on the test inputs"
            )
    return 0


def _run_path(checkpoint: str) -> Any:
    from pathlib import Path

    path = Path(checkpoint)
    return path.parent if path.name == "checkpoint" else path


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gcnprune_jax.bench import bench_checkpoint, bench_untrained, markdown_rows

    if args.onnx:
        from gcnprune_jax.deploy import parse_formats

        parse_formats("onnx")  # without jax2onnx / onnxruntime: exit 2 before any work
    if args.checkpoint:
        result = bench_checkpoint(
            args.checkpoint,
            data_dir=args.data_dir,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            onnx=args.onnx,
        )
        default_out = _run_path(args.checkpoint) / "bench"
    else:
        if args.method is None or args.target_rate is None:
            raise _usage_error("bench needs --checkpoint DIR, or --method M and --rate R")
        cfg = config_from_args(args)
        _check_data_dir(args)
        result = bench_untrained(
            cfg,
            data_dir=args.data_dir,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            onnx=args.onnx,
        )
        default_out = Path(f"runs/bench_{cfg.dataset}_{cfg.method}_r{cfg.target_rate:g}")
    out = Path(args.out) if args.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    table = "\n".join(markdown_rows([result])) + "\n"
    (out / "bench.md").write_text(table)
    print(table + f"wrote {out}/bench.json and bench.md")
    return 0


def _usage_error(message: str) -> GcnpruneError:
    from gcnprune_jax.errors import ConfigError

    return ConfigError(message)


_OPTION_FOR_FIELD = {"learning_rate": "--lr"}


def _with_option_names(message: str) -> str:
    """Config errors name fields ("train.epochs"); on the command line, name the option."""

    def option(match: re.Match[str]) -> str:
        name = match.group(2)
        return _OPTION_FOR_FIELD.get(name, "--" + name.replace("_", "-"))

    return re.sub(r"\b(features|model|train|pruning)\.([a-z_]+)", option, message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gcnprune",
        description="Train and prune skeleton GCNs (SBU, FPHA, synthetic) with JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a dense GCN")
    _add_run_options(train)
    _describe_defaults(train)
    train.set_defaults(func=cmd_train)
    prune = sub.add_parser("prune", help="train a pruned GCN with one of the methods")
    _add_run_options(prune)
    _add_pruning_options(prune)
    _describe_defaults(prune)
    prune.set_defaults(func=cmd_train)
    ev = sub.add_parser("eval", help="re-evaluate a saved run")
    ev.add_argument(
        "--checkpoint", required=True, help="a run's output directory (or its checkpoint/ folder)"
    )
    ev.add_argument(
        "--data-dir", help="the dataset's root directory, if not $GCNPRUNE_DATA_DIR/<dataset>"
    )
    ev.add_argument("--rate", type=float, help="pruning rate (multi-rate runs)")
    ev.set_defaults(func=cmd_eval)
    ex = sub.add_parser(
        "export", help="write the compacted network of a pruned run (Orbax + JSON of shapes)"
    )
    ex.add_argument("--checkpoint", required=True, help="a pruned run's output directory")
    ex.add_argument("--out", help="default: <checkpoint>/compact")
    ex.add_argument("--data-dir", help="the dataset's root, if not $GCNPRUNE_DATA_DIR/<dataset>")
    ex.add_argument(
        "--batch",
        type=int,
        default=64,
        help="batch size at which each layer's fastest layout is measured (default: %(default)s)",
    )
    ex.add_argument(
        "--format",
        default="",
        help="also write portable files of the compacted network, comma-separated: stablehlo "
        "(model.stablehlo, jax.export), onnx (model.onnx; needs the extra "
        "gcnprune-jax[onnx]); each is checked against the JAX logits on the test inputs",
    )
    ex.set_defaults(func=cmd_export)
    be = sub.add_parser(
        "bench", help="time masked, compacted and sparse inference of a pruned network"
    )
    be.add_argument("--checkpoint", help="a pruned run's output directory")
    be.add_argument("--method", help="without --checkpoint: magnitude, structured or random")
    be.add_argument("--rate", type=float, dest="target_rate", help="with --method")
    be.add_argument(
        "--dataset",
        choices=("synthetic", "sbu", "fpha"),
        default="synthetic",
        help="with --method (default: %(default)s)",
    )
    be.add_argument("--data-dir", help="the dataset's root, if not $GCNPRUNE_DATA_DIR/<dataset>")
    be.add_argument(
        "--batch-sizes", type=_int_list, default=[1, 64, 1024], help="default: 1,64,1024"
    )
    be.add_argument("--repeats", type=int, default=20, help="timing samples per measurement")
    be.add_argument(
        "--onnx",
        action="store_true",
        help="also time the masked and the compacted network in ONNX Runtime (needs the extra "
        "gcnprune-jax[onnx])",
    )
    be.add_argument("--out", help="default: <checkpoint>/bench")
    be.set_defaults(func=cmd_bench, fold="all", seed=0, data_seed=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GcnpruneError as err:
        print(f"gcnprune: error: {_with_option_names(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = f" --out {out}" if out else ""
        print(
            f"gcnprune: interrupted; continue with the same command plus --resume{hint}",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
