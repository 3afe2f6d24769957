"""Exceptions raised by the benchmark engine.

Every error carries a complete, human-readable message: the CLI prints ``str(exc)`` and
nothing else (no traceback), so the message must name the file, the key and what was expected.
"""
from __future__ import annotations


class BenchmarkError(Exception):
    """Base class of all benchmark errors."""


class SuiteError(BenchmarkError):
    """A suite YAML (or the params file it references) is invalid. CLI exit code 2."""


class ResultError(BenchmarkError):
    """A result JSON is missing, malformed, or fails its task's schema. CLI exit code 1."""
