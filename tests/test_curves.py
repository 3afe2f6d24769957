"""Training-curve helpers: torn logs, key selection, PNG output."""

from nepa3d.utils.curves import curve_keys, plot_curves, read_jsonl


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')
    assert read_jsonl(p) == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]


def test_keys_and_png(tmp_path):
    recs = [{"epoch": e, "step": 10 * e, "seconds": 1.0, "loss": 1 / (e + 1), "acc": e / 4,
             "note": "x", "ok": True} for e in range(4)]
    assert curve_keys(recs) == ["loss", "acc"]
    out = plot_curves(recs, tmp_path / "c" / "curve.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
