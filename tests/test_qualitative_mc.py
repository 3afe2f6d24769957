"""End-to-end test of the qualitative CPAC marching-cubes tool on planted sphere / cube caches.

Independent checks: the OBJ files parse (1-based faces, vertices in [-1, 1]); the ground-truth
shell of a planted sphere of radius r lies at |‖v‖ − r| ≈ mc_level (its radius is read from the
cache's surface points, not from the UDF); the summary metrics equal a recomputation from the
saved volumes; the ground truth equals the cache grid (res = G) or its trilinear resampling.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nepa3d.analysis import qualitative_cpac_marching_cubes as qmc
from nepa3d.data.cache import load_cache
from nepa3d.geometry.udf import trilinear_sample
from planted import corrupted_copy, tiny_checkpoint, write_planted

G = 16
LEVEL = 0.15  # > half the voxel diagonal (0.108): every sphere's shell crosses the lattice


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("qcache")
    write_planted(root, "train_udf", 2, seed=1, G=G)
    write_planted(root, "eval", 1, seed=2, G=G)
    return root, tiny_checkpoint(root / "ckpt.pt")


def _run(root, ckpt, out, *extra):
    return qmc.main(["--cache_root", str(root), "--ckpt", str(ckpt), "--device", "cpu",
                     "--n_context", "16", "--n_query_probe", "16", "--max_shapes", "2",
                     "--mc_level", str(LEVEL), "--out_dir", str(out), *extra])


def test_files_meshes_and_metrics(planted, tmp_path):
    root, ckpt = planted
    out = tmp_path / "qual"
    s = _run(root, ckpt, out, "--grid_res", str(G))
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    # sorted eval split: box_0000 (class "box") then sphere_0000
    assert [p["name"] for p in s["per_shape"]] == ["box_0000", "sphere_0000"]
    assert s["n_eval_shapes"] == 2 and s["n_head_train_shapes"] == 4
    assert s["qa_tokens"] is True and s["add_eos"] is True
    # max_len 128 leaves (128 - 1 - 1 - 2·16) // 2 = 47 query slots; the default pass holds the
    # 16 positions the head was fitted on (n_query_probe)
    assert s["max_query_per_pass"] == 16
    w = np.load(out / "ridge_w.npy")
    assert w.shape == (33, 1) and w.dtype == np.float32
    for k in ("ckpt", "cache_root", "split", "head_train_split", "head_train_backend",
              "grid_res", "mc_level", "rep_source", "mean_mae_grid", "mean_rmse_grid",
              "mean_iou@level"):
        assert k in s
    maes = []
    for si, p in enumerate(s["per_shape"]):
        d = out / f"{si:03d}_{p['name']}"
        assert p["out_dir"] == str(d)
        for f in ("context_pc.ply", "pred_udf.npy", "gt_udf.npy", "preview.png"):
            assert (d / f).is_file(), f
        ply = (d / "context_pc.ply").read_text().splitlines()
        assert ply[0] == "ply" and "element vertex 16" in ply and len(ply) == 7 + 16
        pred, gt = np.load(d / "pred_udf.npy"), np.load(d / "gt_udf.npy")
        assert pred.shape == gt.shape == (G, G, G) and pred.dtype == gt.dtype == np.float32
        arrays = load_cache(p["path"])
        np.testing.assert_array_equal(gt, arrays["udf_grid"].astype(np.float32))
        # summary metrics = recomputation from the saved volumes
        err = pred.astype(np.float64) - gt
        a, b = gt <= LEVEL, pred <= LEVEL
        assert p["mae_grid"] == pytest.approx(np.abs(err).mean(), rel=1e-9)
        assert p["rmse_grid"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-9)
        assert p["iou@level"] == pytest.approx((a & b).sum() / ((a | b).sum() + 1e-9), abs=1e-12)
        maes.append(p["mae_grid"])
        # meshes: written or reported, never silently missing
        for key in ("pred", "gt"):
            obj = d / f"{key}_mc.obj"
            assert obj.is_file() != (f"{key}_mc" in p["mc_skipped"])
        assert (d / "gt_mc.obj").is_file()
        v, f = qmc.read_obj(d / "gt_mc.obj")
        assert len(v) > 0 and len(f) > 0
        assert f.min() >= 1 and f.max() <= len(v)
        assert np.all(np.abs(v) <= 1.0)
        if p["name"].startswith("sphere"):
            r = float(np.linalg.norm(arrays["pc_xyz"], axis=1).mean())
            dev = np.abs(np.abs(np.linalg.norm(v, axis=1) - r) - LEVEL)
            assert dev.max() < 0.02, (r, dev.max())
            # both sheets of the UDF shell are present
            rad = np.linalg.norm(v, axis=1)
            assert (rad < r).any() and (rad > r).any()
    assert s["mean_mae_grid"] == pytest.approx(np.mean(maes))


def test_resampled_gt_and_skipped_level(planted, tmp_path):
    root, ckpt = planted
    out = tmp_path / "q8"
    s = _run(root, ckpt, out, "--grid_res", "8", "--max_shapes", "1", "--shape_offset", "1",
             "--mc_level", "5.0", "--save_png", "0")
    (p,) = s["per_shape"]
    assert p["name"] == "sphere_0000"
    d = out / f"001_{p['name']}"
    gt = np.load(d / "gt_udf.npy")
    c = -1 + (np.arange(8) + 0.5) * 0.25
    xyz = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    ref = trilinear_sample(load_cache(p["path"])["udf_grid"], xyz).reshape(8, 8, 8)
    np.testing.assert_allclose(gt, ref, atol=1e-6)
    # level above every gt value: reported, not silently dropped
    assert "outside volume range" in p["mc_skipped"]["gt_mc"]
    assert not (d / "gt_mc.obj").exists() and not (d / "preview.png").exists()


def _error_line(capsys) -> str:
    """The one stderr line of an error exit (progress bars aside)."""
    lines = [ln for ln in capsys.readouterr().err.splitlines() if " error: " in ln]
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_checkpoint(planted, tmp_path, capsys):
    root, _ = planted
    out = tmp_path / "q"
    with pytest.raises(SystemExit) as e:
        _run(root, tmp_path / "nope.pt", out, "--grid_res", "8")
    msg = _error_line(capsys)
    assert e.value.code == 2 and "nope.pt" in msg and "does not exist" in msg
    assert not (out / "summary.json").exists()


def test_corrupt_cache(planted, tmp_path, capsys):
    root, ckpt = planted
    bad_root = tmp_path / "bad"
    bad = corrupted_copy(root, bad_root, "eval/sphere/sphere_0000.npz")
    out = tmp_path / "q"
    with pytest.raises(SystemExit) as e:
        _run(bad_root, ckpt, out, "--grid_res", "8")
    assert e.value.code == 2 and f"error: {bad}" in _error_line(capsys)
    assert not (out / "summary.json").exists()


def test_shapes_without_udf_grid_are_skipped(planted, tmp_path):
    import shutil

    root, ckpt = planted
    mixed = tmp_path / "mixed"
    shutil.copytree(root / "eval", mixed / "eval")
    shutil.copytree(root / "train_udf", mixed / "train_udf")
    write_planted(mixed, "eval", 1, seed=3, scan=True, G=G)  # scan kind: no udf_grid
    out = tmp_path / "q"
    s = _run(mixed, ckpt, out, "--grid_res", "8", "--max_shapes", "0", "--save_png", "0")
    assert [p["name"] for p in s["per_shape"]] == ["box_0000", "sphere_0000"]
    assert [k["reason"] for k in s["skipped_shapes"]] == ["no udf_grid"] * 2
    assert s["n_eval_shapes"] == 2


def test_queries_per_pass_rule():
    """Default: the head's own query positions (n_query_probe) capped by the room; 0: the room
    (the reference's rule); k: min(k, room). Lab sizes: room (1026 - 2 - 512) // 2 = 256 = probe."""
    assert qmc.queries_per_pass(47, 16, -1) == 16
    assert qmc.queries_per_pass(10, 16, -1) == 10
    assert qmc.queries_per_pass(47, 16, 0) == 47
    assert qmc.queries_per_pass(47, 16, 30) == 30 and qmc.queries_per_pass(47, 16, 99) == 47
    room = qmc.max_queries_per_pass(1026, 256, qa_tokens=True, add_eos=True)
    assert room == 256 and qmc.queries_per_pass(room, 256, -1) == qmc.queries_per_pass(room, 256, 0)


def test_reference_fill_rule_from_the_cli(planted, tmp_path):
    root, ckpt = planted
    s = _run(root, ckpt, tmp_path / "fill", "--grid_res", "8", "--max_shapes", "1",
             "--save_png", "0", "--queries_per_pass", "0")
    assert s["max_query_per_pass"] == 47  # (128 - 1 - 1 - 2·16) // 2


def test_report_page_from_a_run(planted, tmp_path):
    """The page lists every shape with the summary's metrics (4 decimals), the mean row, the
    mesh-skip reason, and links previews that exist next to it."""
    from nepa3d.analysis import qualitative_report as qr

    root, ckpt = planted
    run = tmp_path / "run"
    s = _run(root, ckpt, run, "--grid_res", "8", "--png_dpi", "30")
    page = tmp_path / "reports" / "qualitative_cpac.md"
    page.parent.mkdir()
    assert qr.main(["--run_dir", str(run), "--out", str(page)]) == 0
    md = page.read_text()
    for si, p in enumerate(s["per_shape"]):
        row = next(line for line in md.splitlines() if line.startswith(f"| {si} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == p["name"] and cells[3] == f"{p['mae_grid']:.4f}"
        assert cells[5] == f"{p['iou@level']:.4f}"
        png = page.parent / "qualitative_cpac" / f"{si:03d}_{p['name']}.png"
        assert png.read_bytes() == (run / f"{si:03d}_{p['name']}" / "preview.png").read_bytes()
        assert f"(qualitative_cpac/{png.name})" in md
    mean = next(line for line in md.splitlines() if line.startswith("| mean"))
    assert f"{np.mean([p['mae_grid'] for p in s['per_shape']]):.4f}" in mean
    # a skipped mesh says why; a checkpoint under the base directory is shown relative to it
    s["per_shape"][0]["mc_skipped"] = {"pred_mc": "level 0.03 outside volume range [0.08, 1.0]"}
    s["ckpt"] = str(tmp_path / "runs" / "x" / "last.pt")
    md2 = qr.render(s, "imgs", base=tmp_path)
    assert "pred_mc: level 0.03 outside volume range" in md2
    assert "`runs/x/last.pt`" in md2 and str(tmp_path) not in md2


def test_report_page_missing_summary(tmp_path, capsys):
    from nepa3d.analysis import qualitative_report as qr

    assert qr.main(["--run_dir", str(tmp_path / "nope"), "--out", str(tmp_path / "q.md")]) == 2
    assert "summary.json" in _error_line(capsys)
