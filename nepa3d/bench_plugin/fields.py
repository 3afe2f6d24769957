"""A typed view of what a NEPA-3D evaluator says it did, parsed from its result envelope.

The fields are the ones the producers write (``args``: every CLI flag, resolved; ``extra``: the
protocol as run), read from ``extra`` first, then ``args``:

==========================  ==========================================================  ===========
field                       written by                                                  guard
==========================  ==========================================================  ===========
``<role>_backend``          cpac ``context`` / ``head_train``; ucpr ``query`` /         leak
                            ``gallery``; cls ``backend``
``<role>_dist_source``      cpac, ucpr (:func:`nepa3d.backends.distance_source`)        leak
``head_train_split``        cpac (``extra``: the split, or ``legacy_transductive``)      transductive
``legacy_transductive``     cpac                                                         transductive
``eval_split`` / ``split``  cpac                                                         transductive
``disjoint_context_query``  cpac                                                         overlap
``target_transform``        cpac                                                         transform
``baseline_only``           cpac                                                         nn_copy
==========================  ==========================================================  ===========
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from benchmark.results import Envelope

_BACKEND_KEY = re.compile(r"^(?:(?P<role>.+)_)?backend$")


@dataclass(frozen=True)
class BackendUse:
    """One backend a result read: its ``role`` (``context``, ``query``, ...; ``""`` for the
    unprefixed ``backend``), the backend name and the recorded source of its point distances
    (None when the producer did not record one)."""

    role: str
    backend: str
    dist_source: Optional[str]

    @property
    def key(self) -> str:
        return f"{self.role}_backend" if self.role else "backend"


def as_bool(value: Any) -> Optional[bool]:
    """``True``/``False`` from a bool, 0/1 or a "true"/"false"-like string; None if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def _fields(env: Envelope) -> dict[str, Any]:
    """``args`` updated with the scalar fields of ``extra`` (what the program did wins)."""
    extra = (env.model_extra or {}).get("extra")
    out = dict(env.args)
    if isinstance(extra, Mapping):
        out.update({k: v for k, v in extra.items() if not isinstance(v, Mapping)})
    return out


@dataclass(frozen=True)
class ProtocolView:
    """The protocol fields of one NEPA-3D result (None: the producer did not record it)."""

    task: str
    backends: tuple[BackendUse, ...] = ()
    eval_split: Optional[str] = None
    head_train_split: Optional[str] = None
    has_head_train_split: bool = False
    legacy_transductive: Optional[bool] = None
    disjoint_context_query: Optional[bool] = None
    target_transform: Optional[str] = None
    baseline_only: bool = False

    @classmethod
    def of(cls, env: Envelope) -> "ProtocolView":
        f = _fields(env)
        backends = []
        for key, value in sorted(f.items()):
            m = _BACKEND_KEY.match(key)
            if m and isinstance(value, str):
                role = m.group("role") or ""
                source = f.get(f"{role}_dist_source" if role else "dist_source")
                backends.append(BackendUse(role, value, source if isinstance(source, str) else None))
        split = f.get("eval_split", f.get("split"))
        transform = f.get("target_transform")
        return cls(
            task=env.task,
            backends=tuple(backends),
            eval_split=None if split is None else str(split),
            head_train_split=None if f.get("head_train_split") is None else str(f["head_train_split"]),
            has_head_train_split="head_train_split" in f,
            legacy_transductive=as_bool(f.get("legacy_transductive")),
            disjoint_context_query=as_bool(f.get("disjoint_context_query")),
            target_transform=None if transform is None else str(transform),
            baseline_only=bool(as_bool(f.get("baseline_only"))),
        )
