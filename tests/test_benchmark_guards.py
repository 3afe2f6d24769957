"""Protocol guards (docs/protocols.md#pitfalls-shared-by-the-protocols), each on a planted
result: the flag fires with the expected reason, a control case stays clean, and the report shows
the flag without dropping the row."""
from __future__ import annotations

import hashlib
from pathlib import Path

from benchutil import envelope, write_json, write_suite  # noqa: E402
from planted_results import CPAC, UCPR, cells, flags_by_row, plant  # noqa: E402

from benchmark import guards  # noqa: E402
from nepa3d.bench_plugin import guards as nepa_guards  # noqa: E402
from nepa3d.bench_plugin.provenance import cache_fingerprint  # noqa: E402
from benchmark.collect import collect  # noqa: E402
from benchmark.expand import expand  # noqa: E402
from benchmark.report import build_report  # noqa: E402
from benchmark.results import Envelope  # noqa: E402
from benchmark.suite import load_suite  # noqa: E402


def env(task="cpac", metrics=None, args=None, **over) -> Envelope:
    return Envelope.model_validate(envelope(task=task, metrics=metrics or CPAC, args=args or {}, **over))


# --- (a) mesh-derived distances in a point-cloud backend -----------------------------------------

def test_mesh_distance_leak_pairs_backend_and_source():
    """The guard reads ``<role>_backend`` and ``<role>_dist_source``, the fields the evaluators
    write (args: the flags; extra: the protocol as run)."""
    check = nepa_guards.check_mesh_distance_leak
    leak = env(args={"context_backend": "pointcloud_noray"}, extra={"context_dist_source": "pt_dist_pool"})
    assert check(leak) == "context_backend=pointcloud_noray reads distances from 'pt_dist_pool'"
    assert check(env(args={"query_backend": "voxel", "gallery_backend": "pointcloud"},
                     extra={"query_dist_source": "pt_dist_udf_pool", "gallery_dist_source": "pt_dist_pc_pool"})) == \
        "query_backend=voxel reads distances from 'pt_dist_udf_pool'"
    # controls: observed-pc distances; the voxel backend's own; mesh / udfgrid reading theirs
    assert check(env(args={"context_backend": "pointcloud_noray"}, extra={"context_dist_source": "pt_dist_pc_pool"})) is None
    assert check(env(args={"query_backend": "voxel"}, extra={"query_dist_source": "pc_xyz"})) is None
    assert check(env(args={"query_backend": "mesh", "gallery_backend": "udfgrid"},
                     extra={"query_dist_source": "pt_dist_pool", "gallery_dist_source": "pt_dist_udf_pool"})) is None
    # a source recorded for another role does not apply
    assert check(env(args={"query_backend": "mesh", "gallery_backend": "pointcloud_noray"},
                     extra={"query_dist_source": "pt_dist_pool", "gallery_dist_source": "pt_dist_pc_pool"})) is None
    assert check(env(args={"context_backend": "pointcloud_noray"})) is None  # nothing recorded


def test_mesh_distance_leak_is_reported_and_blocks(tmp_path):
    suite, jobs = plant(tmp_path, "cpac", {
        "leak": {"args": {"context_backend": "pointcloud"}, "extra": {"context_dist_source": "pt_dist_pool"}},
        "ok": {"args": {"context_backend": "pointcloud"}, "extra": {"context_dist_source": "pt_dist_pc_pool"}}})
    rows = flags_by_row(suite, jobs)
    assert rows["leak"].flags == ["mesh_distance_leak"] and rows["ok"].flags == []
    assert guards.is_blocking("mesh_distance_leak")
    md = build_report(suite, jobs).markdown
    leak_id = rows["leak"].job.job_id
    assert f"- **mesh_distance_leak** (benchmark guard; 1 job(s); blocks promotion): row=leak seed=0 (`{leak_id}`)" in md
    assert f"  - `{leak_id}`: context_backend=pointcloud reads distances from 'pt_dist_pool'" in md
    assert cells(md, "leak")[0] == ["leak", "0.1000", "0.2000", "0.5000",  # single seed: n=1 in the caption
                                    "mesh_distance_leak (1/1)"]
    assert cells(md, "ok")[0][-1] == "—"


# --- (b) easy retrieval pair ----------------------------------------------------------------------

def test_easy_pair_at_098(tmp_path):
    suite, jobs = plant(tmp_path, "ucpr", {
        "easy": {"metrics": {**UCPR, "r@1": 0.98, "r@5": 0.99, "r@10": 1.0, "mAP": 0.99}},
        "hard": {"metrics": {**UCPR, "r@1": 0.979, "r@5": 0.99, "r@10": 1.0, "mAP": 0.98}}})
    rows = flags_by_row(suite, jobs)
    assert rows["easy"].flags == ["easy_pair_saturated"] and rows["hard"].flags == []
    assert rows["easy"].reasons["easy_pair_saturated"] == "r@1 = 0.9800 >= 0.98"
    assert not guards.is_blocking("easy_pair_saturated")  # advisory: not alignment evidence
    md = build_report(suite, jobs).markdown
    assert "- **easy_pair_saturated** (benchmark guard; 1 job(s)): row=easy seed=0" in md


# --- (c) few-shot accuracy at the majority-class rate ---------------------------------------------

def test_majority_collapse_within_tolerance(tmp_path):
    suite, jobs = plant(tmp_path, "cls", {
        "equal": {"metrics": {"test_acc": 0.1115, "test_majority_rate": 0.11147}},  # lab, scratch K=10
        "near": {"metrics": {"test_acc": 0.1160, "test_majority_rate": 0.1115}},    # within 0.005
        "above": {"metrics": {"test_acc": 0.1170, "test_majority_rate": 0.1115}},   # 0.0055 above
        "fine": {"metrics": {"test_acc": 0.2500, "test_majority_rate": 0.0833}}})
    rows = flags_by_row(suite, jobs)
    assert {k: r.flags for k, r in rows.items()} == {"equal": ["majority_collapse"], "near": ["majority_collapse"],
                                                     "above": [], "fine": []}
    assert rows["near"].reasons["majority_collapse"] == "test_acc 0.1160 <= test_majority_rate 0.1115 + 0.005"


# --- (d) transformed targets beside untransformed ones --------------------------------------------

def test_target_transform_is_segregated_and_never_compared(tmp_path):
    path = write_suite(tmp_path, task="cpac", args={"target_transform": "none"},
                       matrix={"ckpt": {"a": {"scale": 1}, "b": {"scale": 2}},
                               "setting": {"plain": {"offset": 0}, "trunc": {"target_transform": "trunc"}}},
                       seeds={"seed": [0, 1]}, reference={"setting": "plain"},
                       tables=[{"rows": ["setting"], "cols": ["ckpt"], "metrics": ["mae"]}],
                       promote={"candidate": {"setting": "trunc"}, "require": {"mae": "<= ref"}})
    suite = load_suite(path, tmp_path / "params.yaml")
    jobs = expand(suite, tmp_path / "results")
    mae = {"plain": 0.10, "trunc": 0.05}  # trunc "wins" on raw mae, but it is another target
    for job in jobs:
        m = mae[job.tags["setting"]] + 0.01 * job.tags["seed"]
        write_json(job.out_json, envelope(task="cpac", metrics={"mae": m, "rmse": 2 * m}, args=job.args))
    rows = collect(suite, jobs).rows
    assert {r.job.job_id: r.flags for r in rows if r.tags["setting"] == "trunc"} == \
        {r.job.job_id: ["target_transform:trunc"] for r in rows if r.tags["setting"] == "trunc"}
    rep = build_report(suite, jobs)
    md = rep.markdown
    # plain: 0.10, 0.11 -> 0.1050 ± 0.0071; trunc: 0.05, 0.06 -> 0.0550 ± 0.0071 (both ckpts)
    assert cells(md, "plain")[0] == ["plain", "0.1050 ± 0.0071", "0.1050 ± 0.0071", "—"]
    assert cells(md, "trunc")[0] == ["trunc", "0.0550 ± 0.0071 †", "0.0550 ± 0.0071 †",
                                     "target_transform:trunc (4/4)"]
    assert "† target_transform=trunc: metrics of another protocol; not comparable with unmarked cells" in md
    assert cells(md, "trunc")[1] == ["trunc", "n/c", "n/c"]  # Δ vs the plain reference
    # the readout ranks them apart: two groups per column, each with one row
    assert "- mae ↓, a: plain 0.1050 ± 0.0071 (ref)\n" in md
    assert "- mae ↓, a [target_transform=trunc]: trunc ⚑ 0.0550 ± 0.0071 (Δ n/c)\n" in md
    assert "- **mixed_target_transform** (table guard; Table 1): setting=trunc under target_transform=trunc" in md
    # the gate compares mae 0.055 <= 0.105 (passes) but refuses incomparable evidence
    assert rep.gate.decision == "REJECT"
    assert "candidate (target_transform=trunc) and reference (default) are not comparable" in rep.gate.reasons


# --- (e) transductive probes -------------------------------------------------------------------------

def test_transductive_probe_and_context_query_overlap(tmp_path):
    base = {"split": "eval", "head_train_split": "train_udf", "disjoint_context_query": 1}
    suite, jobs = plant(tmp_path, "cpac", {
        "ok": {},
        "legacy": {"args": {"head_train_split": ""}},
        "on_eval": {"args": {"head_train_split": "eval"}},
        "extra": {"extra": {"legacy_transductive": True}},
        "overlap": {"args": {"disjoint_context_query": 0}}}, args=base)
    rows = flags_by_row(suite, jobs)
    assert {k: r.derived for k, r in rows.items()} == {
        "ok": [], "legacy": ["args_mismatch:head_train_split", "transductive_probe"],
        "on_eval": ["args_mismatch:head_train_split", "transductive_probe"],
        "extra": ["transductive_probe"], "overlap": ["args_mismatch:disjoint_context_query", "context_query_overlap"]}
    assert rows["legacy"].reasons["transductive_probe"] == \
        "head_train_split='': the head is fit on part of the evaluation shapes"
    assert rows["on_eval"].reasons["transductive_probe"] == "head_train_split='eval' is the evaluation split"
    assert rows["extra"].reasons["transductive_probe"] == "legacy_transductive is true"
    assert rows["overlap"].reasons["context_query_overlap"] == \
        "disjoint_context_query=False: query points may repeat context points"
    md = build_report(suite, jobs).markdown
    for row in ("ok", "legacy", "on_eval", "extra", "overlap"):  # flagged, never dropped
        assert cells(md, row)[0][:2] == [row, "0.1000"]  # single seed: n=1 in the caption
    assert cells(md, "overlap")[0][-1] == "args_mismatch:disjoint_context_query (1/1), context_query_overlap (1/1)"


def test_probe_not_above_nn_copy(tmp_path):
    nn = {"nn_copy": {"mae": 0.0902, "rmse": 0.14, "iou@0.03": 0.54}}
    suite, jobs = plant(tmp_path, "cpac", {
        "worse": {"metrics": {**CPAC, "mae": 0.1364}, "baselines": nn},   # cpac_main, embedded
        "equal": {"metrics": {**CPAC, "mae": 0.0902}, "baselines": nn},
        "better": {"metrics": {**CPAC, "mae": 0.0251}, "baselines": nn},  # lab scale: 0.025 vs 0.062
        "no_baseline": {"metrics": {**CPAC, "mae": 0.5}},
        "baseline_only": {"metrics": {**CPAC, "mae": 0.0902}, "baselines": nn,
                          "extra": {"baseline_only": True}}})
    rows = flags_by_row(suite, jobs)
    assert {k: r.derived for k, r in rows.items()} == {
        "worse": ["probe_not_above_nn_copy"], "equal": ["probe_not_above_nn_copy"], "better": [],
        "no_baseline": [], "baseline_only": []}
    assert rows["worse"].reasons["probe_not_above_nn_copy"] == "mae 0.1364 >= nn_copy mae 0.0902"
    assert not guards.is_blocking("probe_not_above_nn_copy")  # advisory: rows stay comparable
    # another task's metric named mae is not a completion probe
    (tmp_path / "ucpr").mkdir()
    other, other_jobs = plant(tmp_path / "ucpr", "ucpr", {
        "r": {"metrics": {**UCPR, "mae": 1.0}, "baselines": {"nn_copy": {"mae": 0.1}}}})
    assert flags_by_row(other, other_jobs)["r"].derived == []


def test_blocking_flag_on_candidate_rejects_the_gate(tmp_path):
    suite, jobs = plant(tmp_path, "cpac", {
        "ref": {"metrics": {"mae": 0.20, "rmse": 0.3, "iou@0.03": 0.5}},
        "cand": {"metrics": {"mae": 0.10, "rmse": 0.2, "iou@0.03": 0.5}}},
        args={"head_train_split": "none"}, reference={"row": "ref"},
        promote={"candidate": {"row": "cand"}, "require": {"mae": "<= ref"}})
    rep = build_report(suite, jobs)
    # ref is transductive too (the suite asks for it): both sides carry the blocking flag
    assert rep.gate.decision == "REJECT"
    assert rep.gate.reasons == ["1 candidate result(s) carry `transductive_probe` (blocking)",
                                "1 reference result(s) carry `transductive_probe` (blocking)"]
    assert "- ✓ mae 0.1000 <= ref 0.2000" in rep.markdown


# --- (f) a cache other than the suite's ----------------------------------------------------------

def _cache(root: Path, sizes: dict[str, int]) -> Path:
    for name, size in sizes.items():
        p = root / "eval" / "cls" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)
    return root


def test_cache_fingerprint_is_the_manifest_digest(tmp_path):
    """sha256 of "<relative path>\\t<size>\\n" over the sorted .npz files (written out by hand)."""
    root = _cache(tmp_path / "c", {"b.npz": 20, "a.npz": 10})
    (root / "notes.txt").write_text("ignored")
    by_hand = hashlib.sha256(b"eval/cls/a.npz\t10\neval/cls/b.npz\t20\n").hexdigest()
    assert cache_fingerprint(root) == by_hand
    assert cache_fingerprint(tmp_path / "absent") is None


def test_foreign_cache_root_and_fingerprint(tmp_path):
    cache = _cache(tmp_path / "cacheA", {"a.npz": 10, "b.npz": 20})
    current = cache_fingerprint(cache)
    old = "0" * 64
    suite, jobs = plant(tmp_path, "cpac", {
        "ok": {"provenance": {"cache_root": str(cache), "cache_manifest_sha256": current}},
        "args": {"args": {"cache_root": str(tmp_path / "cacheB")}},
        "prov": {"provenance": {"cache_root": str(tmp_path / "cacheB")}},
        "old": {"provenance": {"cache_root": str(cache), "cache_manifest_sha256": old}}},
        args={"cache_root": str(cache)})
    rows = flags_by_row(suite, jobs)
    assert {k: r.derived for k, r in rows.items()} == {
        "ok": [], "args": ["args_mismatch:cache_root"], "prov": ["provenance_mismatch:cache_root"],
        "old": ["cache_fingerprint_mismatch"]}
    assert rows["args"].reasons["args_mismatch:cache_root"] == \
        f"args.cache_root is '{tmp_path / 'cacheB'}'; the suite says '{cache}'"
    assert rows["old"].reasons["cache_fingerprint_mismatch"] == \
        f"cache_manifest_sha256 000000000000 differs from {current[:12]} (the current cache_root {cache})"
    md = build_report(suite, jobs).markdown
    assert f"| cache      | `{cache}` (fingerprint `000000000000`: 1 result(s)); `{cache}` (fingerprint `{current[:12]}`: 1 result(s))" in md


def test_cache_fingerprint_without_the_cache_uses_the_majority(tmp_path):
    gone = str(tmp_path / "not_here")
    fp = {"a": "a" * 64, "b": "b" * 64}
    suite, jobs = plant(tmp_path, "cpac", {
        name: {"provenance": {"cache_root": gone, "cache_manifest_sha256": fp[name[0]]}}
        for name in ("a1", "a2", "b1")}, args={"cache_root": gone})
    rows = flags_by_row(suite, jobs)
    assert {k: r.derived for k, r in rows.items()} == {"a1": [], "a2": [], "b1": ["cache_fingerprint_mismatch"]}
    assert rows["b1"].reasons["cache_fingerprint_mismatch"] == \
        f"cache_manifest_sha256 bbbbbbbbbbbb differs from aaaaaaaaaaaa (most results on {gone})"
    # a tie: nobody can say which cache is right, so every result of the group is flagged
    tie = guards.fingerprint_flags([(r.job, r.envelope) for k, r in rows.items() if k != "a2"])
    assert sorted(tie) == sorted(rows[k].job.job_id for k in ("a1", "b1"))


# --- (g) single-seed rows presented as means ---------------------------------------------------------

def test_single_seed_rows_are_values_not_means(tmp_path):
    suite, jobs = plant(tmp_path, "cpac", {"two": {}, "one": {}}, seeds=(0, 1),
                        write=lambda job: not (job.tags["row"] == "one" and job.tags["seed"] == 1))
    md = build_report(suite, jobs).markdown
    assert cells(md, "one")[0][:2] == ["one", "0.1000 (n=1)"]  # the odd n is said in the cell
    assert cells(md, "two")[0][:2] == ["two", "0.1000 ± 0.0000"]
    assert "- **single_seed** (table guard; Table 1): row=one" in md
    assert "- completed jobs: `3 / 4`" in md
    missing = [j for j in jobs if j.tags == {"row": "one", "seed": 1}][0]
    assert f"  - row=one seed=1 (`{missing.job_id}`): pending" in md


def test_all_single_seed_table_says_so(tmp_path):
    suite, jobs = plant(tmp_path, "cpac", {"a": {}, "b": {}}, seeds=(0,))
    md = build_report(suite, jobs).markdown
    assert "Single seed, n=1: each cell is one result's value, not a mean; no std (guard `single_seed`)." in md
    assert "(n=1)" not in md  # said once, not in every cell
    assert "- **single_seed** (table guard; Table 1): row=a; row=b" in md
    assert "±" not in md.split("## Table 1")[1].split("## Readout")[0]
