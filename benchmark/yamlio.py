"""YAML loading that refuses duplicate keys (PyYAML silently keeps the last one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import SuiteError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings reject duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path | str, what: str = "file") -> Any:
    """Parse a YAML file; any I/O or syntax problem raises :class:`SuiteError` naming the file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError:
        raise SuiteError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SuiteError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read {what}: {exc}") from None
