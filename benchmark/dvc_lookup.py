"""Where DVC runs a suite: the stages of the ``dvc.yaml`` above a suite file whose command runs
``python -m benchmark run|report`` on it (the report's "With DVC" hint). The only module of the
report that reads ``dvc.yaml``; rendering gets the stages as data.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .suite import Suite


def dvc_stages(suite_path: Path, dvc_doc: dict, base: Path) -> dict[str, list[str]]:
    """``{"run": [stage, ...], "report": [...]}``: stages of a dvc.yaml (loaded as ``dvc_doc``,
    located in ``base``) whose command runs ``python -m benchmark run|report`` on this suite (by
    file or by its directory)."""
    target = Path(suite_path).resolve()
    out: dict[str, list[str]] = {"run": [], "report": []}
    for name, stage in (dvc_doc.get("stages") or {}).items():
        cmds = stage.get("cmd") if isinstance(stage, dict) else None
        for cmd in ([cmds] if isinstance(cmds, str) else cmds or []):
            try:
                tokens = shlex.split(str(cmd))
            except ValueError:
                continue
            for i, tok in enumerate(tokens[:-1]):
                if tok != "benchmark" or tokens[i + 1] not in out:
                    continue
                for arg in tokens[i + 2:]:
                    if arg in ("&&", ";", "|"):
                        break
                    p = (base / arg).resolve()
                    if (p == target or p == target.parent) and name not in out[tokens[i + 1]]:
                        out[tokens[i + 1]].append(name)
    return out


def find_dvc_stages(suite: Suite) -> dict[str, list[str]]:
    """Search dvc.yaml upwards from the suite file; ``{}`` if there is none (or it does not parse)."""
    import yaml

    try:
        start = Path(suite.source).resolve().parent
    except OSError:
        return {}
    for d in (start, *start.parents):
        f = d / "dvc.yaml"
        if f.is_file():
            try:
                doc = yaml.safe_load(f.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
            return dvc_stages(Path(suite.source), doc, d) if isinstance(doc, dict) else {}
    return {}
