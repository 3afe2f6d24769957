"""Test ordering for `make test` (pytest -n 2 --dist worksteal): the two end-to-end tests that take
minutes start at once, one on each worker, and the rest is shared out around them. Worksteal gives
each worker a contiguous half of the collected order, so one goes first and the other opens the
second half. Without xdist the order only changes when the long tests run."""
from __future__ import annotations

#: The longest tests (a DVC chain on a tiny profile; the canaries on the default profile).
LONG = ("test_pipeline_dvc.py::test_dvc_repro_noop_and_exp_run",
        "test_canary.py::test_each_planted_defect_moves_its_protocol_on_the_default")


def pytest_collection_modifyitems(session, config, items):
    long = [next((it for it in items if it.nodeid.endswith(name)), None) for name in LONG]
    long = [it for it in long if it is not None]
    rest = [it for it in items if it not in long]
    if not long:
        return
    half = len(rest) // 2
    order = [long[0], *rest[:half]] + ([long[1]] if len(long) > 1 else []) + rest[half:]
    items[:] = order
