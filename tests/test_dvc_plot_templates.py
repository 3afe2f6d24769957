"""dvc.yaml's plots draw the report CSVs with error bars: each names a template in .dvc/plots/,
its x and y are columns of the CSV the suite's plot writes, and the template filled by dvc-render
(as `dvc plots show` does) has an error-bar layer over lo/hi that skips single-seed points."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.plots import csv_fields, plot_stem
from benchmark.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
ENTRIES = [e for e in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if isinstance(e, dict)]


def _spec_for(csv_path: str):
    stem = Path(csv_path).stem
    for f in sorted((REPO / "suites").glob("*.yaml")):
        if stem.startswith(f.stem + "_"):
            suite = load_suite(f, REPO / "params.yaml")
            for spec in suite.plots:
                if plot_stem(suite.name, spec) == stem:
                    return suite, spec
    raise AssertionError(f"no suite plot writes {csv_path}")


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: next(iter(e)))
def test_dvc_plot_uses_an_errorbar_template_over_the_csv_columns(entry):
    path, props = next(iter(entry.items()))
    suite, spec = _spec_for(path)
    assert props["x"] == spec.x and props["y"] == spec.y and {spec.x, spec.y} <= set(csv_fields(spec))
    categorical = bool(spec.categorical) or bool(spec.labels)
    assert props["template"] == ("errorbars_categorical" if categorical else "errorbars")
    assert (REPO / ".dvc" / "plots" / f"{props['template']}.json").is_file()


_RENDER = """
import csv, io, json, sys
from dvc_render.vega import VegaRenderer  # the package (tests/dvc_render.py shadows it in-process)
name, folder, text = sys.argv[1:]
points = list(csv.DictReader(io.StringIO(text)))
r = VegaRenderer(points, "p", template=name, template_dir=folder, x="K", y="test_acc", title="t")
print(json.dumps(r.get_filled_template()))
"""


@pytest.mark.parametrize("name", ["errorbars", "errorbars_categorical"])
def test_template_filled_by_dvc_render_draws_error_bars(name, tmp_path):
    text = ("series,row,pos,K,test_acc,std,n,lo,hi\n"
            "scratch,0,0,full,0.8,0.01,3,0.79,0.81\n"
            "scratch,1,1,1,0.3,,1,,\n")
    try:
        out = subprocess.run([sys.executable, "-c", _RENDER, name, str(REPO / ".dvc" / "plots"), text],
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError as exc:
        if "No module named 'dvc_render'" in exc.stderr:
            pytest.skip("dvc-render is not installed")
        raise
    spec = json.loads(out)
    assert "<DVC_METRIC" not in out
    bar = [layer for layer in spec["layer"] if layer["mark"]["type"] == "errorbar"]
    assert len(bar) == 1 and bar[0]["encoding"]["y"]["field"] == "lo_num" and bar[0]["encoding"]["y2"]["field"] == "hi_num"
    assert bar[0]["transform"] == [{"filter": "datum.n_num >= 2"}]  # n = 1: no bar
    assert {"calculate": "toNumber(datum['test_acc'])", "as": "y_num"} in spec["transform"]
    assert spec["data"]["values"][0]["lo"] == "0.79"
    x = spec["encoding"]["x"]
    if name == "errorbars_categorical":
        assert x["field"] == "K" and x["type"] == "ordinal" and x["sort"] == {"field": "pos_num", "op": "min"}
        assert all(layer["mark"]["type"] != "line" for layer in spec["layer"])  # 'full' not joined to K=1
    else:
        assert x == {"field": "pos_num", "type": "quantitative", "title": "K"}
