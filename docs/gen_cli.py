"""Write docs/cli.md, the command-line reference, from the argparse parser of `gcnprune`.

    python docs/gen_cli.py          # rewrite docs/cli.md
    python docs/gen_cli.py --check  # exit 1 if docs/cli.md differs from the parser

The parser is only read (`gcnprune_jax.cli.build_parser`); the text is independent of the
terminal width. tests/test_docs.py fails when docs/cli.md drifts from the parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"
WIDTH = 100

HEADER = """\
# Command-line reference

Generated from the argparse parser of `gcnprune_jax/cli.py` by `python docs/gen_cli.py`; do not
edit by hand. `tests/test_docs.py` fails when this page and the parser differ: after changing an
option, run `python docs/gen_cli.py` and commit the result.

Options of `train` and `prune` that are left unset take the defaults of the dataset (and, for
`prune`, of the method) shown in their descriptions; every run records the settings it used in
`result.json` under `config` ([outputs.md](outputs.md)). Exit status: 0 on success, 2 for bad
input (a missing or malformed file, an impossible option), with a one-paragraph message and no
traceback; 130 when interrupted (continue with the same command plus `--resume`).
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=WIDTH, max_help_position=30)


def _escape(text: str) -> str:
    """Markdown table cell text: no pipes, tags or emphasis markers, one line."""
    for old, new in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*")):
        text = text.replace(old, new)
    return " ".join(text.split())


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Markdown: one table per argument group of `parser`."""
    formatter = _formatter(parser.prog)
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"**{_escape(group.title or 'options')}**", ""]
        lines += ["| option | description |", "|---|---|"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            text = formatter._expand_help(action) if action.help else ""
            if action.required:
                text = f"required. {text}".strip()
            lines.append(f"| `{invocation}` | {_escape(text)} |")
        lines.append("")
    return lines


def render() -> str:
    """The text of docs/cli.md for the current parser."""
    sys.path.insert(0, str(ROOT))
    from gcnprune_jax.cli import build_parser

    parser = build_parser()
    parser.formatter_class = _formatter
    commands = _subparsers(parser)
    helps = _command_help(parser)
    lines = [HEADER, "## Commands", ""]
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`gcnprune {n}`](#gcnprune-{n}) | {_escape(helps[n])} |" for n in commands]
    lines += ["", "```text", parser.format_usage().rstrip(), "```", ""]
    for name, sub in commands.items():
        sub.formatter_class = _formatter
        summary = _escape(helps[name])
        lines += [f"## gcnprune {name}", "", summary[:1].upper() + summary[1:] + ".", ""]
        lines += ["```text", sub.format_usage().rstrip(), "```", ""]
        lines += _options(sub)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    opts = args.parse_args(argv)
    text = render()
    if opts.check:
        current = CLI_MD.read_text() if CLI_MD.exists() else ""
        if current != text:
            print(f"{CLI_MD} is stale: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    CLI_MD.write_text(text)
    print(f"wrote {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
