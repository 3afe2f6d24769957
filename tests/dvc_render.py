"""Render a dvc.yaml command as DVC's templating does, for tests that check or run a stage's
command without DVC.

``${a.b}`` and ``${a.b[i]}`` look up the scope (params plus foreach ``key`` / ``item``); a mapping
unpacks to flags (``--k v``; True: ``--k``; False: left out; a list: ``--k a b``), as DVC's default
``parsing`` settings do; ``$((a + b))`` of two integers is evaluated, as the shell would.
"""
from __future__ import annotations

import re
from typing import Any


def _flag(key: str, value: Any) -> str:
    if value is True:
        return f"--{key}"
    if isinstance(value, list):
        return f"--{key} " + " ".join(map(str, value))
    return f"--{key} {value}"


def render(cmd: str, scope: dict) -> str:
    def lookup(m: re.Match) -> str:
        value = scope
        for part in re.findall(r"[^.\[\]]+", m.group(1)):
            value = value[int(part)] if part.isdigit() else value[part]
        if isinstance(value, dict):
            return " ".join(_flag(k, v) for k, v in value.items() if v is not False)
        return str(value)

    cmd = re.sub(r"\$\{([^}]+)\}", lookup, cmd)
    return re.sub(r"\$\(\(\s*(\d+)\s*\+\s*(\d+)\s*\)\)", lambda m: str(int(m.group(1)) + int(m.group(2))), cmd)
