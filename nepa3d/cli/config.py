"""Typed, frozen configurations of the research CLIs, built once from the parsed flags.

Every ``python -m nepa3d...`` CLI declares one frozen dataclass whose field names are its
parser's ``dest`` names (shared flag groups come from :mod:`nepa3d.cli.groups` by
inheritance). ``main`` parses the command line and builds the configuration once:

    cfg = PretrainConfig.parse(argv)            # = config_from_args(PretrainConfig, ns)
    cfg.epochs = 3                              # FrozenInstanceError: nothing mutates it
    longer = dataclasses.replace(cfg, epochs=3)  # a derived variant is a new object
    cfg.record()                                # the args dict recorded with results

Booleans: a ``--flag 0/1`` switch (``type=int, choices=SWITCH``, the syntax of the lab's command
lines in tests/fixtures/lab_commands.sh) and a ``store_true`` switch both become a ``bool`` field (:func:`parse_switch`, the one 0/1/true/false
parser). :meth:`CliConfig.record` writes each field back as the parser produced it (a 0/1
switch as the int 0/1, a ``store_true`` switch as a bool), in the parser's flag order, so the
args recorded in result envelopes and checkpoints are the same keys, values and types as the
``vars(namespace)`` recorded before.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C", bound="CliConfig")

_TRUE = ("1", "true")
_FALSE = ("0", "false")


def parse_switch(value: object) -> bool:
    """A 0/1 switch as a bool: ``0``/``1`` (int or text), ``true``/``false`` (any case, also a
    bool). Anything else raises ``argparse.ArgumentTypeError`` (usable as an argparse ``type=``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise argparse.ArgumentTypeError(f"must be 0, 1, true or false (got {value!r})")


def _is_switch_action(action: argparse.Action) -> bool:
    """A flag that takes no value (``store_true`` / ``store_false``): recorded as a bool."""
    return action.nargs == 0


@functools.lru_cache(maxsize=None)
def parser_layout(cls: type) -> tuple[tuple[str, bool], ...]:
    """``(dest, takes_no_value)`` of every flag of ``cls``'s parser, in the parser's order
    (the order ``vars(namespace)`` lists them)."""
    out, seen = [], set()
    for action in cls.build_parser()._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in seen:
            continue
        seen.add(action.dest)
        # interned like the attribute names of vars(namespace): a pickled record (checkpoint
        # args) shares its key strings with other dicts the same way, byte for byte
        out.append((sys.intern(action.dest), _is_switch_action(action)))
    return tuple(out)


def _bool_fields(cls: type) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in dataclasses.fields(cls) if hints[f.name] is bool)


def config_from_args(cls: type[C], ns: argparse.Namespace | dict) -> C:
    """Build ``cls`` from a parsed namespace (or its ``vars`` dict): every flag becomes the
    field of the same name; ``bool`` fields go through :func:`parse_switch`. A flag without a
    field, or a field without a flag, is a ``TypeError`` naming them (a programming error)."""
    given = dict(vars(ns) if isinstance(ns, argparse.Namespace) else ns)
    names = [f.name for f in dataclasses.fields(cls)]
    missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
    if missing or extra:
        raise TypeError(f"{cls.__name__}: fields without a flag {missing}, flags without a field "
                        f"{extra}")
    switches = _bool_fields(cls)
    return cls(**{n: parse_switch(given[n]) if n in switches else given[n] for n in names})


@dataclass(frozen=True, kw_only=True)
class CliConfig:
    """Base of every CLI configuration: frozen, keyword-only, one field per flag. A subclass
    defines :meth:`build_parser` (its CLI's parser)."""

    @classmethod
    def build_parser(cls) -> argparse.ArgumentParser:
        raise NotImplementedError(f"{cls.__name__} names no parser")

    @classmethod
    def from_args(cls: type[C], ns: argparse.Namespace | dict) -> C:
        return config_from_args(cls, ns)

    @classmethod
    def parse(cls: type[C], argv: list[str] | None = None) -> C:
        """Parse ``argv`` (``sys.argv[1:]`` when None) with the CLI's parser and build the
        configuration (argparse's one-line errors and exit status 2 on bad flags)."""
        return cls.from_args(cls.build_parser().parse_args(argv))

    def record(self) -> dict[str, Any]:
        """The args dict recorded with results: flag order, a 0/1 switch as the int 0/1, a
        ``store_true`` switch as a bool, every other value as parsed."""
        out: dict[str, Any] = {}
        for dest, no_value in parser_layout(type(self)):
            v = getattr(self, dest)
            out[dest] = int(v) if isinstance(v, bool) and not no_value else v
        return out
