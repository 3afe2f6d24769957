"""``${a.b.c}`` interpolation of suite values from ``params.yaml``.

A string that is exactly one reference (``"${eval.max_shapes}"``) takes the referenced value with
its type (int, float, list...). A reference inside a longer string is substituted as text
(``"runs/${exp.name}/last.pt"``). ``$${`` escapes a literal ``${``. References point into
params.yaml only (never at other suite values), so resolution is one pass and order-free.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SuiteError
from .yamlio import load_yaml

_REF = re.compile(r"(?<!\$)\$\{([^}]*)\}")
_WHOLE = re.compile(r"^\$\{([^}]*)\}$")
_MISSING = object()
_YAML_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n", "true", "false"}


@dataclass
class Params:
    """A lazily loaded params.yaml: the file is read on the first reference, not before."""

    path: Path
    _data: Any = field(default=_MISSING, repr=False)
    used: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        if self._data is _MISSING:
            self._data = load_yaml(self.path, what="params file") if self.path.exists() else None
        return self._data

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def lookup(self, dotted: str) -> Any:
        """Value at ``a.b.c`` (list indices allowed: ``a.0``); raises ``KeyError(msg)`` if absent."""
        node = self.data
        seen: list[str] = []
        for part in dotted.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                where = ".".join(seen) or "the top level"
                if isinstance(node, dict):
                    keys = ", ".join(map(str, node)) or "(none)"
                    hint = ""
                    if part.lower() in _YAML_BOOL_WORDS and any(isinstance(k, bool) for k in node):
                        hint = "; YAML reads unquoted yes/no/on/off as booleans: quote the key"
                    raise KeyError(f"no key {part!r} under {where} (has: {keys}){hint}")
                raise KeyError(f"{where} is a {type(node).__name__}, not a mapping")
            seen.append(part)
        self.used[dotted] = node
        return node


def has_reference(value: Any) -> bool:
    """True if ``value`` (recursively) contains a ``${...}`` reference."""
    if isinstance(value, str):
        return bool(_REF.search(value))
    if isinstance(value, dict):
        return any(has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(has_reference(v) for v in value)
    return False


def interpolate(value: Any, params: Params, *, file: Path | str, keypath: str) -> Any:
    """Resolve every ``${...}`` in ``value`` (recursing into dicts and lists).

    Errors raise :class:`SuiteError` naming the suite file, the key path and the missing reference.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, params, file=file, keypath=_join(keypath, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, params, file=file, keypath=f"{keypath}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    whole = _WHOLE.match(value)
    if whole:
        return _resolve(whole.group(1), params, file, keypath)

    def sub(match: re.Match) -> str:
        got = _resolve(match.group(1), params, file, keypath)
        if isinstance(got, (dict, list)):
            raise SuiteError(f"{file}: {keypath}: ${{{match.group(1)}}} is a {type(got).__name__}; "
                             "only a whole-string reference may take a list or mapping")
        return _scalar_text(got)

    return _REF.sub(sub, value).replace("$${", "${")


def _resolve(ref: str, params: Params, file: Path | str, keypath: str) -> Any:
    ref = ref.strip()
    if not ref:
        raise SuiteError(f"{file}: {keypath}: empty reference ${{}}; expected ${{dotted.params.path}}")
    if not params.exists:
        raise SuiteError(f"{file}: {keypath}: references ${{{ref}}} but params file "
                         f"{params.path} does not exist (pass --params)")
    try:
        return params.lookup(ref)
    except KeyError as exc:
        raise SuiteError(f"{file}: {keypath}: unknown params reference ${{{ref}}} in "
                         f"{params.path}: {exc.args[0]}") from None


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)
