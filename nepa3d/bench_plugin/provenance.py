"""Which cache and checkpoint a NEPA-3D result came from: provenance keys, the cache fingerprint
check and the report's ``cache`` line.

The evaluators record ``provenance.cache_root`` / ``ckpt_sha256`` and
``provenance.cache_manifest_sha256`` (:func:`nepa3d.utils.results.cache_manifest_sha256`, the one
definition of the fingerprint, computed here by the same function).
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Optional

from benchmark.guards import Fingerprint, register_fingerprint, register_provenance_key
from benchmark.plugins import register_report_lines

CACHE_ARG = "cache_root"
CACHE_FINGERPRINT = "cache_manifest_sha256"
DASH = "—"

_memo: dict[str, Optional[str]] = {}


def cache_fingerprint(root: Path | str) -> Optional[str]:
    """:func:`nepa3d.utils.results.cache_manifest_sha256` of ``root`` (None if it is not a
    directory here), memoized per process: a report reads each cache once."""
    from nepa3d.utils.results import cache_manifest_sha256

    key = os.path.realpath(root)
    if key not in _memo:
        _memo[key] = cache_manifest_sha256(root)
    return _memo[key]


def cache_line(collected) -> list[tuple[str, str]]:
    """The protocol table's ``cache`` row: each ``cache_root`` with the fingerprint its results
    recorded and how many results did."""
    roots = Counter((r.job.args.get(CACHE_ARG), r.envelope.provenance.model_dump().get(CACHE_FINGERPRINT))
                    for r in collected.rows if r.job.args.get(CACHE_ARG) is not None)
    if not roots:
        return [("cache", DASH)]
    return [("cache", "; ".join(f"`{root}` (fingerprint `{(fp or 'unrecorded')[:12]}`: {n} result(s))"
                                for (root, fp), n in sorted(roots.items(), key=lambda kv: str(kv[0]))))]


register_provenance_key(CACHE_ARG, CACHE_FINGERPRINT, "ckpt_sha256")
register_fingerprint(Fingerprint(
    arg=CACHE_ARG, field=CACHE_FINGERPRINT, compute=cache_fingerprint,
    flag="cache_fingerprint_mismatch",
    description="the result was computed on another version of the cache than the suite's"))
register_report_lines(cache_line)
