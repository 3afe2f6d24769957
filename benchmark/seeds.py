"""Seed derivation: every derived seed is a pure function of one root seed and a job's identity.

A suite either fixes its seeds (``seeds: {seed: [0, 1, 2]}``: the values are passed as written)
or asks for replicates (``root_seed: 1234`` with ``seeds: {seed: 3}``): replicate ``r`` of a
matrix point then gets

    derive_seed(root_seed, {"command": {"module"|"program": ...}, "args": <the point's args
                            without the seed arg, canonical>, "replicate": r})

which is the first 4 bytes of ``sha256(canonical JSON of {"root_seed": root_seed, "identity":
identity})`` read as a big-endian unsigned integer, shifted right by one bit: an int in
``[0, 2**31 - 1]`` (a valid seed for numpy, torch and ``random``), the same in every process,
on every machine and under every Python version (no ``hash()``, which is salted per process).
Canonical JSON: keys sorted, separators ``,`` and ``:``, ASCII only.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

SEED_BITS = 31


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free, ASCII JSON: the same bytes for equal values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def derive_seed(root_seed: int, identity: Mapping[str, Any]) -> int:
    """Seed in ``[0, 2**31 - 1]`` for ``identity`` (a JSON-able mapping) under ``root_seed``."""
    if isinstance(root_seed, bool) or not isinstance(root_seed, int):
        raise TypeError(f"root_seed must be an int; got {type(root_seed).__name__} {root_seed!r}")
    text = canonical_json({"root_seed": root_seed, "identity": dict(identity)})
    digest = hashlib.sha256(text.encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - SEED_BITS)


def replicate_identity(command: Mapping[str, Any], args: Mapping[str, Any], replicate: int) -> dict[str, Any]:
    """Identity of replicate ``replicate`` of a matrix point: its command, its args (``None`` and
    ``False`` dropped, as on the argv; the seed arg must not be among them) and the index."""
    kept = {k: args[k] for k in sorted(args) if args[k] is not None and args[k] is not False}
    return {"command": dict(command), "args": kept, "replicate": int(replicate)}
