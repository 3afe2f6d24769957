"""The NEPA-3D protocol as a plugin of the benchmark engine (:mod:`benchmark.plugins`).

Importing this package registers, through the engine's registries only:

* :mod:`.tasks` -- the task kinds ``cls``, ``ucpr``, ``cpac`` and ``pretrain`` with their metric
  rules, chance levels and metric guards (thresholds: :mod:`nepa3d.protocol_thresholds`);
* :mod:`.guards` -- the guards over a whole result (``mesh_distance_leak``,
  ``transductive_probe``, ``context_query_overlap``, ``probe_not_above_nn_copy``,
  ``target_transform:<name>``), each reading the typed view :class:`.fields.ProtocolView` of the
  fields the evaluators write;
* :mod:`.provenance` -- the provenance keys compared with the job's args, the cache fingerprint
  (``cache_fingerprint_mismatch``) and the report's ``cache`` line.

It is found the way any lab's plugin is: the ``benchmark.plugins`` entry point
``nepa3d = "nepa3d.bench_plugin"`` of this distribution (``pyproject.toml``), or
``BENCH_PLUGINS=nepa3d.bench_plugin`` where the distribution is not installed. The evaluators
never import it (it imports the engine); what they share with it lives in
:mod:`nepa3d.protocol_thresholds` (standard library only).
"""
from __future__ import annotations

from . import guards, provenance, tasks  # noqa: F401  (each registers on import)
