"""Every research CLI reads well: ``--help`` names the module (``python -m <module>``), gives
every flag a help text and shows defaults. The module list is derived by scanning ``nepa3d/``,
so a new CLI cannot be forgotten."""
from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from nepa3d.cli.args import DefaultsHelpFormatter, make_parser

REPO = Path(__file__).resolve().parents[1]
_PARSER = re.compile(r"\b(ArgumentParser|OneLineParser|make_parser)\(")
_ENTRY = re.compile(r"^def (build_parser|main)\(", re.M)


def cli_modules() -> list[str]:
    """Modules under nepa3d/ that define ``build_parser`` or ``main`` and build an argparse
    parser (the parser helpers' own module aside)."""
    out = []
    for path in sorted((REPO / "nepa3d").rglob("*.py")):
        if path.relative_to(REPO).as_posix() == "nepa3d/cli/args.py":
            continue
        text = path.read_text()
        if _PARSER.search(text) and _ENTRY.search(text):
            out.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    return out


MODULES = cli_modules()


def test_the_scan_finds_the_known_clis():
    for known in ("nepa3d.train.pretrain", "nepa3d.train.finetune_cls",
                  "nepa3d.analysis.completion_cpac_udf", "nepa3d.data.preprocess_shapenet",
                  "nepa3d.data.synthetic", "nepa3d.data.migrate_add_pt_dist_pc_pool"):
        assert known in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_cli_help_names_the_module_and_every_flag(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "build_parser"), f"{module}: define build_parser() (main uses it)"
    parser = mod.build_parser()
    assert parser.prog.startswith(f"python -m {module}"), parser.prog
    assert issubclass(parser.formatter_class, DefaultsHelpFormatter)
    bare = [a.option_strings or [a.dest] for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not bare, f"{module}: flags without help: {bare}"
    text = parser.format_help()
    assert text.startswith(f"usage: python -m {module}")
    fmt = parser._get_formatter()
    silent = [a.option_strings for a in parser._actions
              if a.option_strings and a.nargs != 0 and a.default is not None
              and a.default is not argparse.SUPPRESS
              and "default" not in fmt._get_help_string(a).lower()]
    assert not silent, f"{module}: defaults not shown: {silent}"


def test_help_shows_defaults_once():
    p = make_parser("nepa3d.x", "Doc line.\n\nMore.")
    p.add_argument("--n", type=int, default=3, help="how many")
    p.add_argument("--name", default="", help="a name")
    p.add_argument("--said", default=1, help="1 (default) or 0")
    p.add_argument("--flag", action="store_true", help="a switch")
    p.add_argument("--opt", default=None, help="omitted: none")
    text = " ".join(p.format_help().split())
    assert p.description == "Doc line."
    assert "how many (default: 3)" in text
    assert 'a name (default: "")' in text
    assert "1 (default) or 0 --flag" in text  # already said: not repeated
    assert "a switch --opt" in text and "omitted: none" in text and "(default: None)" not in text


def test_bad_value_is_one_line_naming_the_module(capsys):
    p = make_parser("nepa3d.x", "doc")
    p.add_argument("--n", type=int, default=3, help="how many")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--n", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == \
        "python -m nepa3d.x: error: argument --n: invalid int value: 'x'\n"
