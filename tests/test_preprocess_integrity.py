"""Result integrity of the data CLIs (issue 13): never a wrong cache with exit 0.

Re-runs over an existing cache end as a fresh run would (one split per shape, one profile per
cache, split lists = files), failed inputs exit non-zero with one line each, and bad arguments
exit 2 with one line naming the flag. Expectations are computed here independently: the split
from md5 keys, profiles from the stored arrays, caches compared with fresh runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from test_preprocess import assert_same_caches, npz_files, write_h5, write_shapenet

from nepa3d.data import preprocess_scanobjectnn as scan_cli
from nepa3d.data import preprocess_shapenet as sn_cli
from nepa3d.data import preprocess_shapenet_unpaired as mat_cli
from nepa3d.data import shapenet_unpaired_split as split_cli
from nepa3d.data.cache import load_cache, read_records

REPO = Path(__file__).resolve().parents[1]
SYN = "02691156"
TINY = ["--pc_points", "64", "--pt_pool", "64", "--ray_pool", "32", "--n_views", "2",
        "--rays_per_view", "16", "--pc_grid", "8", "--df_grid", "8", "--dist_ref_points", "128",
        "--workers", "0"]
ANY_EXT = "*/*/models/model_normalized.*"

PC_PLY = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
          "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n")
STRIP_PLY = PC_PLY.replace("end_header", "element tristrips 1\nproperty list int int "
                           "vertex_indices\nend_header") + "2 0 1\n"  # a strip of 2: no triangle
LINES_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\nl 2 3\n"
FLAT_OBJ = "v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n"
CORRUPT_PLY = (b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\n"
               b"end_header\n\x00\x01")


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


def run_main(main: Callable, argv: list[str], capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of a CLI ``main`` (argparse exits count as codes)."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def md5_splits(models: list[str], ratio: float, seed: int = 0) -> dict[str, str]:
    """The reference split rule, written out: the round(ratio n) (>= 1 from n = 10) models of
    smallest md5 key go to test."""
    k = int(round(ratio * len(models)))
    k = max(1, k) if len(models) >= 10 else k
    key = {m: int(hashlib.md5(f"{SYN}/{m}:{seed}".encode()).hexdigest()[:8], 16) for m in models}
    test = set(sorted(models, key=key.get)[:k])
    return {m: "test" if m in test else "train" for m in models}


def cache_layout(out: Path) -> dict[str, list[str]]:
    """``{"<synset>/<model>": [splits holding a file]}``."""
    found: dict[str, list[str]] = {}
    for rel in npz_files(out):
        split, syn, name = rel.parts
        found.setdefault(f"{syn}/{Path(name).stem}", []).append(split)
    return found


def assert_consistent(out: Path, root: Path) -> None:
    """One split per shape; files = records = the split lists of the meshes present."""
    layout = cache_layout(out)
    assert all(len(s) == 1 for s in layout.values()), layout
    records = read_records(out)
    files = {str(p) for p in npz_files(out)}
    assert set(records) == files
    assert all(r.split == r.relpath.split("/")[0] for r in records.values())
    for split in ("train", "test"):
        listed = (out / "_splits" / f"{split}.txt").read_text().splitlines()
        want = {f"{Path(p).parts[-4]}/{Path(p).parts[-3]}" for p in listed}
        assert {k for k, s in layout.items() if s == [split]} == want, split
    meshes = {f"{p.parts[-4]}/{p.parts[-3]}" for p in root.glob(sn_cli.DEFAULT_GLOB)}
    assert set(layout) == meshes


def profile_of(out: Path) -> str:
    return json.loads((out / "_meta" / "preprocess_shapenet_run.json").read_text())["profile"]


# ---------------------------------------------------------------------------------------
# problem 1: re-runs end as a fresh run would


def test_removing_and_readding_a_mesh_keeps_each_shape_in_one_split(tmp_path, capsys):
    root, out = tmp_path / "root", tmp_path / "out"
    paths = write_shapenet(root, 12, synsets=(SYN,))
    models = [Path(p).parts[-3] for p in paths]
    args = ["--shapenet_root", str(root), "--out_root", str(out), "--test_ratio", "0.25"] + TINY
    assert run_main(sn_cli.main, args, capsys)[0] == 0
    before = md5_splits(models, 0.25)
    assert {k.split("/")[1]: s[0] for k, s in cache_layout(out).items()} == before
    original = tmp_path / "original"
    shutil.copytree(out, original)

    # remove the test shape of smallest key: another shape moves from train to test
    victim = min((m for m in models if before[m] == "test"),
                 key=lambda m: hashlib.md5(f"{SYN}/{m}:0".encode()).hexdigest()[:8])
    parked = tmp_path / "parked"
    shutil.move(str(root / SYN / victim), parked)
    rest = [m for m in models if m != victim]
    after = md5_splits(rest, 0.25)
    moved = [m for m in rest if after[m] != before[m]]
    assert moved, "the reproduction needs a shape that changes split"
    rc, out_text, _ = run_main(sn_cli.main, args, capsys)
    assert rc == 0 and "removed" in out_text
    assert_consistent(out, root)
    assert {k.split("/")[1]: s[0] for k, s in cache_layout(out).items()} == after
    fresh = tmp_path / "fresh"
    assert run_main(sn_cli.main, [*args[:2], "--out_root", str(fresh), *args[4:]], capsys)[0] == 0
    assert_same_caches(out, fresh)                       # the re-run = a fresh run

    # the unpaired split never puts a shape in a train bucket and in eval
    doc = split_cli.build_split(str(out), "train", "test", [0.34, 0.33, 0.33], 0)
    assert doc["meta"]["listed_from"] == "records"
    train_keys = {r["key"] for r in doc["records"] if r["split"] != "eval"}
    eval_keys = {r["key"] for r in doc["records"] if r["split"] == "eval"}
    assert not train_keys & eval_keys
    assert eval_keys == {f"{SYN}/{m}" for m in rest if after[m] == "test"}

    # re-add: back to the original cache, byte for byte in content
    shutil.move(str(parked), root / SYN / victim)
    assert run_main(sn_cli.main, args, capsys)[0] == 0
    assert_consistent(out, root)
    assert_same_caches(out, original)


def test_rerun_with_another_profile_rebuilds_every_file(tmp_path, capsys):
    root, out = tmp_path / "root", tmp_path / "out"
    write_shapenet(root, 6)
    args = ["--shapenet_root", str(root), "--out_root", str(out), "--test_ratio", "0.5"] + TINY
    assert run_main(sn_cli.main, args, capsys)[0] == 0
    first = profile_of(out)

    rc, text, _ = run_main(sn_cli.main, args + ["--pt_pool", "96"], capsys)
    assert rc == 0 and "ok=6 skip=0" in text and "made with other settings" in text
    second = profile_of(out)
    assert second != first
    for rel in npz_files(out):                          # the arrays say which profile made them
        assert load_cache(out / rel)["pt_xyz_pool"].shape == (96, 3), rel
    assert {r.profile for r in read_records(out).values()} == {second}

    # a one-split run with another profile: the other split's files cannot stay
    train_args = args + ["--split", "train", "--n_views", "4", "--ray_pool", "64"]
    rc, text, _ = run_main(sn_cli.main, train_args, capsys)
    assert rc == 0
    assert not list((out / "test").rglob("*.npz")) and list((out / "train").rglob("*.npz"))
    assert {r.profile for r in read_records(out).values()} == {profile_of(out)}
    for rel in npz_files(out):
        o = load_cache(out / rel)["ray_o_pool"]
        assert o.shape == (64, 3) and len(np.unique(o.round(5), axis=0)) == 4, rel  # 4 cameras
    # flags that only chunk the work leave the content, and the files, as they are
    stamp = {p: (out / p).stat().st_mtime_ns for p in npz_files(out)}
    rc, text, _ = run_main(sn_cli.main, train_args + ["--pt_query_chunk", "7",
                                                      "--ray_query_chunk", "5"], capsys)
    assert rc == 0 and "ok=0 skip=3" in text
    assert stamp == {p: (out / p).stat().st_mtime_ns for p in npz_files(out)}
    # another seed: rebuilt
    rc, text, _ = run_main(sn_cli.main, train_args + ["--seed", "5"], capsys)
    assert rc == 0 and "ok=3 skip=0" in text and "another seed" in text


def test_stray_files_are_not_listed_and_a_rerun_removes_them(tmp_path, capsys):
    root, out = tmp_path / "root", tmp_path / "out"
    write_shapenet(root, 4, synsets=(SYN,))
    args = ["--shapenet_root", str(root), "--out_root", str(out), "--test_ratio", "0.5"] + TINY
    assert run_main(sn_cli.main, args, capsys)[0] == 0
    test_file = sorted((out / "test").rglob("*.npz"))[0]
    stray = out / "train" / SYN / test_file.name           # the same shape, also in train
    shutil.copy(test_file, stray)
    doc = split_cli.build_split(str(out), "train", "test", [0.34, 0.33, 0.33], 0)
    assert f"{SYN}/{test_file.stem}" not in {r["key"] for r in doc["records"]
                                            if r["split"] != "eval"}
    rc, text, _ = run_main(sn_cli.main, args, capsys)
    assert rc == 0 and "not wanted at this place" in text and not stray.exists()
    assert_consistent(out, root)


def test_scan_rerun_with_another_profile_or_label_keeps_one_profile_and_one_class(tmp_path,
                                                                                  capsys):
    src, out = tmp_path / "h5", tmp_path / "out"
    write_scan(src / "training_objectdataset.h5", 4, seed=0)
    write_scan(src / "test_objectdataset.h5", 2, seed=1)
    args = ["--scan_root", str(src), "--out_root", str(out), "--ray_pool", "4"]
    assert run_main(scan_cli.main, args + ["--pt_pool", "32"], capsys)[0] == 0
    rc, text, _ = run_main(scan_cli.main, args + ["--pt_pool", "48"], capsys)
    assert rc == 0 and "ok=4 skip=0" in text and "ok=2 skip=0" in text
    assert {load_cache(out / p)["pt_xyz_pool"].shape[0] for p in npz_files(out)} == {48}
    # a train-only run with another profile: the test files of the old one cannot stay
    assert run_main(scan_cli.main, args + ["--pt_pool", "40", "--split", "train"], capsys)[0] == 0
    assert not list((out / "test").rglob("*.npz"))
    assert {load_cache(out / p)["pt_xyz_pool"].shape[0] for p in npz_files(out)} == {40}
    # a relabelled sample leaves its old class folder; the others stay as they are
    with h5py.File(src / "training_objectdataset.h5", "a") as f:
        old = int(f["label"][0, 0])
        f["label"][0, 0] = old + 7
    stamp = {p: (out / p).stat().st_mtime_ns for p in npz_files(out)}
    rc, text, _ = run_main(scan_cli.main, args + ["--pt_pool", "40", "--split", "train"], capsys)
    assert rc == 0 and "ok=1 skip=3" in text
    names = [p.name for p in npz_files(out)]
    assert sorted(names) == sorted(set(names)) and len(names) == 4
    assert (out / "train" / f"class_{old + 7:03d}" / "training_objectdataset_000000.npz").exists()
    assert all(stamp[p] == (out / p).stat().st_mtime_ns for p in npz_files(out) if p in stamp)
    assert set(read_records(out)) == {str(p) for p in npz_files(out)}


def test_unpaired_split_without_records_refuses_a_shape_in_both_splits(tmp_path, capsys):
    from planted import write_planted

    write_planted(tmp_path / "c", "train", per_class=3, seed=0, G=4)
    write_planted(tmp_path / "c", "test", per_class=1, seed=1, G=4, first=3)
    js = tmp_path / "s.json"
    rc, _, err = run_main(split_cli.main, ["--cache_root", str(tmp_path / "c"), "--out_json",
                                           str(js)], capsys)
    assert rc == 0 and "no file records" in err       # listed from the folders, with a note
    keys = json.loads(js.read_text())["records"]
    assert not ({r["key"] for r in keys if r["split"] == "eval"}
                & {r["key"] for r in keys if r["split"] != "eval"})
    # the same name in both splits (the defect a stale cache carried)
    (tmp_path / "c" / "test" / "sphere" / "sphere_0000.npz").write_bytes(b"x")
    js.unlink()
    rc, _, err = run_main(split_cli.main, ["--cache_root", str(tmp_path / "c"), "--out_json",
                                           str(js)], capsys)
    assert rc == 1 and "sphere/sphere_0000" in err and "both" in err and not js.exists()
    assert len(err.strip().splitlines()) == 1


def test_rematerialising_a_changed_split_leaves_each_shape_in_one_view_split(tmp_path, capsys):
    src = tmp_path / "src"
    for split, names in (("train", ("a", "b", "c")), ("test", ("d",))):
        for n in names:
            (src / split / SYN).mkdir(parents=True, exist_ok=True)
            (src / split / SYN / f"{n}.npz").write_bytes(n.encode())
    js, view = tmp_path / "s.json", tmp_path / "view"

    def write(assign: dict[str, str]) -> None:
        src_split = {s: "test" if s == "eval" else "train" for s in assign.values()}
        js.write_text(json.dumps({"records": [
            {"key": f"{SYN}/{k}", "split": s, "src_relpath": f"{src_split[s]}/{SYN}/{k}.npz"}
            for k, s in assign.items()]}))

    argv = ["--src_cache_root", str(src), "--split_json", str(js), "--out_root", str(view)]
    write({"a": "train_mesh", "b": "train_pc", "c": "train_udf", "d": "eval"})
    assert run_main(mat_cli.main, argv, capsys)[0] == 0
    write({"a": "train_mesh", "b": "train_udf", "d": "eval"})   # b moves, c is gone
    rc, out, _ = run_main(mat_cli.main, argv, capsys)
    assert rc == 0 and "removed 2" in out
    found = sorted(str(p.relative_to(view)) for p in view.rglob("*.npz"))
    assert found == [f"eval/{SYN}/d.npz", f"train_mesh/{SYN}/a.npz", f"train_udf/{SYN}/b.npz"]
    assert (view / "train_udf" / SYN / "b.npz").read_bytes() == b"b"


# ---------------------------------------------------------------------------------------
# problem 2: failures exit non-zero unless allowed, and are recorded


def test_failures_exit_1_unless_allowed_and_are_recorded(tmp_path, capsys):
    root, out = tmp_path / "root", tmp_path / "out"
    write_shapenet(root, 2, synsets=(SYN,))
    bad = [write_mesh(root, "09999999", f"zz{i}", ext, body)
           for i, (ext, body) in enumerate((("ply", PC_PLY), ("obj", FLAT_OBJ), ("obj", "")))]
    args = ["--shapenet_root", str(root), "--out_root", str(out), "--mesh_glob", ANY_EXT] + TINY
    rc, text, err = run_main(sn_cli.main, args, capsys)
    assert rc == 1
    fails = [ln for ln in err.splitlines() if " FAIL " in ln]
    assert [ln.split(" FAIL ")[1].split(": ")[0] for ln in fails] == [str(p) for p in bad]
    assert "ok=2 skip=0 fail=3 total=5" in text.splitlines()[-1]
    assert err.strip().splitlines()[-1].endswith("3 input(s) failed, more than --max_failures 0 "
                                                 "allows (each is listed above)")
    assert not (out / "_meta" / "corpus.json").exists()
    run = json.loads((out / "_meta" / "preprocess_shapenet_run.json").read_text())
    assert run["exit_code"] == 1 and run["max_failures"] == 0
    assert [f["input"] for f in run["failed"]] == [str(p) for p in bad]

    rc, text, _ = run_main(sn_cli.main, args + ["--max_failures", "3"], capsys)
    assert rc == 0 and "ok=0 skip=2 fail=3" in text
    run = json.loads((out / "_meta" / "preprocess_shapenet_run.json").read_text())
    assert run["exit_code"] == 0 and run["max_failures"] == 3 and len(run["failed"]) == 3
    assert (out / "_meta" / "corpus.json").exists()


def test_an_empty_result_is_an_error_whatever_the_allowance(tmp_path, capsys):
    root = tmp_path / "root"
    write_mesh(root, SYN, "a", "obj", LINES_OBJ)
    rc, _, err = run_main(sn_cli.main, ["--shapenet_root", str(root), "--out_root",
                                        str(tmp_path / "o"), "--max_failures", "5"] + TINY, capsys)
    assert rc == 1 and "no cache file was produced" in err
    src = tmp_path / "h5"
    write_h5(src / "training_objectdataset.h5", 3, 0)
    write_h5(src / "test_objectdataset.h5", 0, 1)
    rc, _, err = run_main(scan_cli.main, ["--scan_root", str(src), "--out_root",
                                          str(tmp_path / "s"), "--split", "test", "--pt_pool",
                                          "32", "--ray_pool", "4"], capsys)
    assert rc == 1 and "no cache file was produced" in err


# ---------------------------------------------------------------------------------------
# problems 2-4: bad inputs, table-driven


def write_mesh(root: Path, syn: str, model: str, ext: str, body: str | bytes) -> Path:
    p = root / syn / model / "models" / f"model_normalized.{ext}"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(body if isinstance(body, bytes) else body.encode())
    return p


def write_scan(path: Path, n: int, *, labels: int | None = -1, seed: int = 0) -> Path:
    """An h5 of ``n`` clouds with ``labels`` labels (-1: n; None: no label dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["data"] = rng.normal(size=(n, 64, 3)).astype(np.float32)
        if labels is not None:
            f["label"] = rng.integers(0, 5, size=(n if labels < 0 else labels, 1))
    return path


@dataclass
class Case:
    name: str
    cli: str                        # "sn" | "scan" | "split" | "mat"
    setup: Callable                 # (inputs root, out root) -> extra argv
    rc: int
    says: tuple                     # substrings the error output must hold ("{in}" = input root)
    n_fail_lines: int = 0
    gone: str = "\0"                # files ending so may go (a view entry of a missing source)


def _bad_mesh(ext, body):
    return lambda root, out: (write_mesh(root, "09999999", "zz", ext, body), [])[1]


def _blocked(sub):
    def setup(root, out):
        write_mesh(root, "09999999", "zz", "obj", (root / SYN / "model000" / "models" /
                                                   "model_normalized.obj").read_text())
        (out / sub).parent.mkdir(parents=True, exist_ok=True)
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
        (out / sub).write_text("a file")
        return []
    return setup


def _flags(*flags):
    return lambda root, out: list(flags)


def _scan_file(name, **kw):
    return lambda root, out: (write_scan(root / "scan" / name, 3, seed=9, **kw), [])[1]


def _negative_labels(root, out):
    path = write_scan(root / "scan" / "training_zz.h5", 3, seed=9)
    with h5py.File(path, "r+") as f:
        f["label"][0, 0] = -1
    return []


def _corrupt_h5(root, out):
    (root / "scan" / "training_zz.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    return []


CASES = [
    Case("point_cloud_ply", "sn", _bad_mesh("ply", PC_PLY), 1,
         ("09999999/zz/models/model_normalized.ply", "no triangle faces", "point cloud"), 1),
    Case("triangle_strips_without_a_triangle", "sn", _bad_mesh("ply", STRIP_PLY), 1,
         ("model_normalized.ply", "no triangle faces", "'tristrips' give no triangle"), 1),
    Case("line_elements_only", "sn", _bad_mesh("obj", LINES_OBJ), 1,
         ("09999999/zz/models/model_normalized.obj", "no triangle faces", "'l'"), 1),
    Case("all_faces_degenerate", "sn", _bad_mesh("obj", FLAT_OBJ), 1,
         ("09999999/zz", "degenerate (zero area)"), 1),
    Case("corrupt_ply", "sn", _bad_mesh("ply", CORRUPT_PLY), 1,
         ("09999999/zz", "cannot load mesh"), 1),
    Case("empty_file", "sn", _bad_mesh("obj", ""), 1, ("09999999/zz", "empty (0 bytes)"), 1),
    Case("out_root_is_a_file", "sn", _blocked(""), 2, ("--out_root", "is a file, not a folder")),
    Case("split_folder_is_a_file", "sn", _blocked("train"), 2,
         ("--out_root", "/train is a file, not a folder")),
    Case("synset_folder_is_a_file", "sn", _blocked("train/09999999"), 1,
         ("09999999/zz", "train/09999999 is a file, not a folder"), 1),
    Case("zero_pool", "sn", _flags("--pt_pool", "0"), 2, ("--pt_pool", "integer >= 1", "(got '0')")),
    Case("negative_grid", "sn", _flags("--df_grid", "-8"), 2, ("--df_grid", ">= 1")),
    Case("zero_views", "sn", _flags("--n_views", "0"), 2, ("--n_views", ">= 1")),
    Case("zero_chunk", "sn", _flags("--pt_query_chunk", "0"), 2, ("--pt_query_chunk", ">= 1")),
    Case("negative_workers", "sn", _flags("--workers", "-2"), 2, ("--workers", ">= 0")),
    Case("test_ratio_above_1", "sn", _flags("--test_ratio", "1.5"), 2,
         ("--test_ratio", "in [0, 1]", "1.5")),
    Case("surface_ratio_below_0", "sn", _flags("--pt_surface_ratio", "-0.1"), 2,
         ("--pt_surface_ratio", "in [0, 1]")),
    Case("nan_sigma", "sn", _flags("--pt_surface_sigma", "nan"), 2,
         ("--pt_surface_sigma", ">= 0")),
    Case("negative_allowance", "sn", _flags("--max_failures", "-1"), 2, ("--max_failures",)),
    Case("h5_missing_label", "scan", _scan_file("training_zz.h5", labels=None), 1,
         ("scan/training_zz.h5", "no 'label' dataset"), 1),
    Case("h5_label_length_mismatch", "scan", _scan_file("training_zz.h5", labels=2), 1,
         ("scan/training_zz.h5", "'label' holds 2 entries but 'data' holds 3 clouds"), 1),
    Case("h5_corrupt", "scan", _corrupt_h5, 1, ("training_zz.h5", "cannot read the h5 file"), 1),
    Case("h5_negative_label", "scan", _negative_labels, 1,
         ("scan/training_zz.h5", "not class ids (integers >= 0)"), 1),
    Case("scan_zero_pool", "scan", _flags("--pt_pool", "0"), 2, ("--pt_pool", ">= 1")),
    Case("scan_ratio_above_1", "scan", _flags("--pt_surface_ratio", "2"), 2,
         ("--pt_surface_ratio", "in [0, 1]")),
    Case("scan_out_root_is_a_file", "scan", _blocked(""), 2, ("--out_root", "is a file")),
    Case("unpaired_ratios_not_summing_to_1", "split", _flags("--ratios", "0.5", "0.5", "0.5"), 2,
         ("--ratios", "sum to 1", "1.5")),
    Case("unpaired_ratio_outside_unit", "split", _flags("--ratios", "1.2", "-0.1", "-0.1"), 2,
         ("--ratios", "in [0, 1]")),
    Case("unpaired_two_ratios", "split", _flags("--ratios", "0.5", "0.5"), 2,
         ("--ratios", "expected 3")),
    Case("materialize_missing_source", "mat", lambda root, out: (
        (out / "train" / SYN / "model001.npz").unlink(), [])[1], 1,
         ("train/02691156/model001.npz", "source file missing"), 1, gone="/model001.npz"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A good corpus (meshes and scans) with its caches, split JSON and view, built once."""
    base = tmp_path_factory.mktemp("good")
    root, out = base / "in", base / "out"
    write_shapenet(root, 3, synsets=(SYN,))
    write_scan(root / "scan" / "training_objectdataset.h5", 4, seed=0)
    write_scan(root / "scan" / "test_objectdataset.h5", 2, seed=1)
    argv = {"sn": ["--shapenet_root", str(root), "--out_root", str(out), "--mesh_glob",
                   ANY_EXT] + TINY,
            "scan": ["--scan_root", str(root / "scan"), "--out_root", str(out / "scan"),
                     "--pt_pool", "32", "--ray_pool", "4"],
            "split": ["--cache_root", str(out), "--out_json", str(out / "split.json")],
            "mat": ["--src_cache_root", str(out), "--split_json", str(out / "split.json"),
                    "--out_root", str(out / "view")]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TQDM_DISABLE", "1")
        assert sn_cli.main(argv["sn"]) == 0
        assert scan_cli.main(argv["scan"]) == 0
        assert split_cli.main(argv["split"]) == 0
        assert mat_cli.main(argv["mat"]) == 0
    return base, argv


def snapshot(out: Path) -> dict[str, tuple[str, int]]:
    """``{relpath: (sha256, mtime_ns)}`` of every file and link under ``out``."""
    snap = {}
    for p in sorted(out.rglob("*")):
        if p.is_symlink():
            snap[str(p.relative_to(out))] = (str(p.readlink()), 0)
        elif p.is_file():
            snap[str(p.relative_to(out))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return snap


MAINS = {"sn": sn_cli.main, "scan": scan_cli.main, "split": split_cli.main, "mat": mat_cli.main}
OUT_FLAG = {"sn": "--out_root", "scan": "--out_root", "split": "--out_json", "mat": "--out_root"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, built, tmp_path, capsys):
    base, argv = built
    shutil.copytree(base, tmp_path / "w", symlinks=True)
    work = tmp_path / "w"
    root, out = work / "in", work / "out"
    argv = [a.replace(str(base), str(work)) for a in argv[case.cli]]
    if case.cli == "mat":  # the view links into the copied cache
        shutil.rmtree(out / "view")
        assert mat_cli.main(argv) == 0
    target = out / "scan" if case.cli == "scan" else out
    extra = case.setup(root, target)
    before = snapshot(out)
    rc, _, err = run_main(MAINS[case.cli], argv + extra, capsys)
    assert rc == case.rc, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    for s in case.says:
        assert any(s in ln for ln in lines), (s, err)
    fails = [ln for ln in lines if " FAIL " in ln]
    assert len(fails) == case.n_fail_lines, err
    if case.rc == 2:                    # refused before anything was written
        assert len(lines) == 1, err
        assert snapshot(out) == before
    else:                               # one line per failure, then the verdict
        assert lines[-1].split("] error: ")[1]
        after = snapshot(out)
        kept = {k: v for k, v in before.items() if k.endswith(".npz") and not k.endswith(case.gone)}
        assert {k: after.get(k) for k in kept} == kept   # files already written: unchanged


@pytest.mark.slow
def test_cli_subprocess_prints_one_line_per_failure_and_no_traceback(tmp_path):
    root = tmp_path / "root"
    write_shapenet(root, 1, synsets=(SYN,))
    pc = write_mesh(root, "09999999", "zz", "ply", PC_PLY)
    env = {"PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "-m", "nepa3d.data.preprocess_shapenet", "--shapenet_root", str(root),
            "--mesh_glob", ANY_EXT] + TINY
    r = subprocess.run(base + ["--out_root", str(tmp_path / "o")], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"[preprocess_shapenet] FAIL {pc}: MeshError: no triangle faces: 4 vertices only "
        "(a point cloud)",
        "[preprocess_shapenet] error: 1 input(s) failed, more than --max_failures 0 allows "
        "(each is listed above)"]
    r = subprocess.run(base + ["--out_root", str(tmp_path / "o"), "--ray_pool", "-3"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "python -m nepa3d.data.preprocess_shapenet: error: argument --ray_pool: must be an "
        "integer >= 1 (got '-3')"]


def test_an_unreadable_scan_file_keeps_every_later_sample_on_its_place_in_the_stream(
        tmp_path, capsys, monkeypatch):
    """The split's query pools come from one shared RandomState, served sample by sample over
    the sorted files. A file whose labels read but whose points do not still takes its draws,
    so the next file's caches equal those of a run where nothing failed (and their records'
    ``seed:position`` stays true)."""
    src = tmp_path / "h5"
    write_scan(src / "training_objectdataset_a.h5", 3, seed=1)
    write_scan(src / "training_objectdataset_b.h5", 2, seed=2)
    argv = ["--split", "train", "--pt_pool", "32", "--ray_pool", "4", "--scan_root", str(src)]
    rc, _, _ = run_main(scan_cli.main, argv + ["--out_root", str(tmp_path / "clean")], capsys)
    assert rc == 0
    real = scan_cli._load_data

    def unreadable_a(path):
        if path.endswith("_a.h5"):
            raise OSError("Can't synchronously read data (filter returned failure)")
        return real(path)

    monkeypatch.setattr(scan_cli, "_load_data", unreadable_a)
    out = tmp_path / "broken"
    rc, text, err = run_main(scan_cli.main, argv + ["--out_root", str(out), "--max_failures", "3"],
                             capsys)
    assert rc == 0 and "ok=2 skip=0 fail=3" in text
    assert err.count(" FAIL ") == 3 and "filter returned failure" in err
    clean_b = sorted((tmp_path / "clean").rglob("training_objectdataset_b_*.npz"))
    broken_b = sorted(out.rglob("training_objectdataset_b_*.npz"))
    assert len(clean_b) == len(broken_b) == 2
    for c, b in zip(clean_b, broken_b):
        with np.load(c) as zc, np.load(b) as zb:
            assert c.name == b.name and set(zc.files) == set(zb.files)
            for k in zc.files:
                np.testing.assert_array_equal(zc[k], zb[k], err_msg=f"{b.name}:{k}")
