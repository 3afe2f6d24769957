"""benchmark.ingest_read / benchmark.ingest: metrics read from flat JSON files and CSV rows.

Fixtures are written here by hand; expected values and line numbers are read off them.
"""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from benchmark.errors import SuiteError
from benchmark.expand import expand, job_id_for
from benchmark.ingest import main as ingest_main
from benchmark.ingest_read import IngestError, metric_values, read_source
from benchmark.results import load_result
from benchmark.suite import load_suite


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --- flat JSON -------------------------------------------------------------------------------

def test_flat_json_object_is_one_record(tmp_path):
    path = _write(tmp_path / "m.json", '{"run": "a", "seed": 0, "PSNR": 21.5, "SSIM": "0.25", "steps": 30000}')
    src = read_source(path, "json")
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(src.records) == 1
    rec = src.match({})
    assert (rec.where, rec.row) == (str(path), None)
    assert src.match({"run": "a", "seed": "0"}) is rec  # an int cell matches its digits
    assert metric_values(rec, ["SSIM", "PSNR", "steps"]) == {"SSIM": 0.25, "PSNR": 21.5, "steps": 30000.0}
    with pytest.raises(IngestError, match=r"m\.json: no row with seed=1 \(1 rows read\)$"):
        src.match({"seed": "1"})
    with pytest.raises(IngestError, match=r"m\.json: no key 'LPIPS' \(ingest\.metrics\)$"):
        metric_values(rec, ["LPIPS"])


def test_json_list_records_are_matched_by_select(tmp_path):
    path = _write(tmp_path / "all.json", json.dumps([
        {"run": "a", "seed": 0, "PSNR": 20.0}, {"run": "a", "seed": 1, "PSNR": 21.0},
        {"run": "b", "seed": 0, "PSNR": 22.0}, {"run": "b", "seed": 0, "PSNR": 23.0}]))
    src = read_source(path, "json")
    rec = src.match({"run": "a", "seed": "1"})
    assert (rec.where, rec.row, metric_values(rec, ["PSNR"])) == (f"{path}[1]", 1, {"PSNR": 21.0})
    with pytest.raises(IngestError,
                       match=r"all\.json: 2 rows match run=b, seed=0 \(\[2\], \[3\]\); expected exactly one"):
        src.match({"run": "b", "seed": "0"})


@pytest.mark.parametrize("text, message", [
    ('{"PSNR": NaN}', r"m\.json: column 'PSNR': nan is not a finite number"),
    ('{"PSNR": -Infinity}', r"m\.json: column 'PSNR': -inf is not a finite number"),
    ('{"PSNR": true}', r"m\.json: column 'PSNR': expected a number; got true"),
    ('{"PSNR": null}', r"m\.json: column 'PSNR': expected a number; got null"),
    ('{"PSNR": "n/a"}', r"m\.json: column 'PSNR': 'n/a' is not a number"),
    ('{"PSNR": 1, "PSNR": 2}', r"m\.json: duplicate key 'PSNR' in one object"),
    ('{"PSNR": {"val": 1}}', r"m\.json: key 'PSNR': expected a number or a string \(a flat object\); got dict"),
    ('[{"PSNR": 1}, 3]', r"m\.json\[1\]: expected a flat JSON object; got int"),
    ('"PSNR"', r"m\.json: expected a flat JSON object or a list of them; got str"),
    ('{"PSNR": 1,\n}', r"m\.json:2: not valid JSON: "),
])
def test_bad_json_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(IngestError, match=message) as info:
        metric_values(read_source(path, "json").match({}), ["PSNR"])
    assert "\n" not in str(info.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(IngestError, match=r"nope\.csv: metrics file not found$"):
        read_source(tmp_path / "nope.csv", "csv")
    (tmp_path / "b.csv").write_bytes(b"run,PSNR\n\xff,1\n")
    with pytest.raises(IngestError, match=r"b\.csv: not UTF-8 text"):
        read_source(tmp_path / "b.csv", "csv")


# --- CSV -------------------------------------------------------------------------------------

def test_csv_rows_keep_their_line_numbers_and_skip_blank_lines(tmp_path):
    path = _write(tmp_path / "s.csv", """
        run,seed,PSNR
        a,0,20.5

        "b",0,"21.0"
        a,1,
        """)
    src = read_source(path, "csv")
    assert src.columns == ("run", "seed", "PSNR")
    assert [(r.row, dict(r.cells)) for r in src.records] == [
        (2, {"run": "a", "seed": "0", "PSNR": "20.5"}), (4, {"run": "b", "seed": "0", "PSNR": "21.0"}),
        (5, {"run": "a", "seed": "1", "PSNR": ""})]
    assert metric_values(src.match({"run": "b", "seed": "0"}), ["PSNR"]) == {"PSNR": 21.0}
    with pytest.raises(IngestError, match=r"s\.csv:5: column 'PSNR': empty cell \(missing value\)"):
        metric_values(src.match({"run": "a", "seed": "1"}), ["PSNR"])
    with pytest.raises(IngestError, match=r"s\.csv: no row with run=a, seed=0\.0"):
        src.match({"run": "a", "seed": "0.0"})  # text compare: 0 is not 0.0


def test_row_sha256_follows_the_row_not_the_file(tmp_path):
    a = _write(tmp_path / "a.csv", "run,PSNR,SSIM\nx,1,2\ny,3,4\n")
    b = _write(tmp_path / "b.csv", "SSIM,run,PSNR\n4,y,3\n2,x,1\nz,5,6\n")  # columns moved, a row added
    ra, rb = read_source(a, "csv").match({"run": "x"}), read_source(b, "csv").match({"run": "x"})
    assert ra.sha256 == rb.sha256
    assert ra.sha256 == hashlib.sha256(b'{"PSNR":"1","SSIM":"2","run":"x"}').hexdigest()
    c = _write(tmp_path / "c.csv", "run,PSNR,SSIM\nx,1,2.0\n")
    assert read_source(c, "csv").match({"run": "x"}).sha256 != ra.sha256


@pytest.mark.parametrize("text, message", [
    ("run,PSNR,PSNR\nx,1,2\n", r"s\.csv:1: duplicate column 'PSNR' \(columns 2 and 3\)"),
    ("run,,PSNR\nx,1,2\n", r"s\.csv:1: column 2 has no name"),
    ("run,PSNR\nx,1\ny,2,3\n", r"s\.csv:3: 3 cells; the header has 2 columns"),
    ("", r"s\.csv: empty file \(expected a header row\)"),
])
def test_bad_csv_structure(tmp_path, text, message):
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(IngestError, match=message):
        read_source(tmp_path / "s.csv", "csv")


# --- suites and jobs -------------------------------------------------------------------------

SUITE = """
    name: lab_json
    task: command
    ingest:
      format: json
      path: {root}/runs/{{model}}/seed{{seed}}.json
      metrics: [PSNR, LPIPS]
      directions: {{LPIPS: min}}
    matrix:
      model: {{a: a, b: b}}
    seeds: {{seed: [0, 1]}}
    """


def _lab(tmp_path: Path, edits: dict[str, str] | None = None) -> Path:
    for model, base in (("a", 20.0), ("b", 21.0)):
        for seed in (0, 1):
            _write(tmp_path / "runs" / model / f"seed{seed}.json",
                   json.dumps({"PSNR": base + seed, "LPIPS": 0.5 - seed / 10, "note": "ok"}))
    text = textwrap.dedent(SUITE).format(root=tmp_path)
    for old, new in (edits or {}).items():
        text = text.replace(old, new)
    return _write(tmp_path / "lab_json.yaml", text)


def test_json_suite_jobs_write_envelopes(tmp_path):
    suite = load_suite(_lab(tmp_path), tmp_path / "params.yaml")
    assert suite.kind.direction("LPIPS") == "min" and suite.kind.direction("PSNR") == "max"
    assert suite.tables[0].metrics == ["PSNR", "LPIPS"]  # no tables: one of the ingested metrics
    jobs = expand(suite, tmp_path / "results")
    assert [(j.tags["model"], j.tags["seed"]) for j in jobs] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    job = jobs[3]
    assert job.argv[1:3] == ["-m", "benchmark.ingest"]
    assert job.job_id == job_id_for({"module": "benchmark.ingest"}, job.args)
    assert job.args["path"] == f"{tmp_path}/runs/b/seed1.json" and job.args["select"] == []
    assert ingest_main(job.argv[3:]) == 0  # what the subprocess runs
    env = load_result(job.out_json, "command")
    assert env.metrics == {"PSNR": 22.0, "LPIPS": pytest.approx(0.4)}
    assert env.args == job.args  # no args_mismatch flag
    assert env.provenance.model_extra["code"]["module"] == "benchmark.ingest"
    src = env.provenance.model_extra["source"]
    data = (tmp_path / "runs" / "b" / "seed1.json").read_bytes()
    assert src == {"path": job.args["path"], "format": "json", "sha256": hashlib.sha256(data).hexdigest(),
                   "row": None, "row_sha256": job.args["row_sha256"]}


def test_select_numbers_read_as_text(tmp_path):
    suite = load_suite(_lab(tmp_path, {"format: json": "format: json\n  select: {PSNR: 20.0}"}),
                       tmp_path / "params.yaml")
    assert suite.ingest.select == {"PSNR": "20.0"}
    # seed0.json of model a holds PSNR 20.0 (its JSON number reads "20.0"); seed1.json holds 21.0
    with pytest.raises(SuiteError, match=r"a/seed1\.json: no row with PSNR=20\.0 \(1 rows read\) "
                                         r"\(ingest of .*job model=a seed=1\)$"):
        expand(suite, tmp_path / "results")


def test_job_refuses_a_row_that_changed_after_expansion(tmp_path, capsys):
    job = expand(load_suite(_lab(tmp_path), tmp_path / "params.yaml"), tmp_path / "results")[0]
    (tmp_path / "runs" / "a" / "seed0.json").write_text('{"PSNR": 25.0, "LPIPS": 0.5, "note": "ok"}')
    assert ingest_main(job.argv[3:]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ingest: error: {tmp_path}/runs/a/seed0.json: the row changed since the suite "
                          "was expanded") and "\n" not in err
    assert not job.out_json.exists()


@pytest.mark.parametrize("edits, message", [  # replacements in the suite text as written to disk
    ({"seed{seed}": "seed{sed}"}, r"lab_json\.yaml: ingest\.path: unknown placeholder \{sed\}; "
                                  r"expected one of: model, seed"),
    ({"{LPIPS: min}": "{SSIM: min}"}, r"ingest\.directions\.SSIM: not an ingested metric; expected one of: "
                                      r"PSNR, LPIPS"),
    ({"{LPIPS: min}": "{LPIPS: lower}"}, r"ingest\.directions\.LPIPS: input should be 'min' or 'max'"),
    ({"[PSNR, LPIPS]": "[PSNR, PSNR]"}, r"ingest\.metrics\[1\]: 'PSNR' is listed twice"),
    ({"[PSNR, LPIPS]": "[PSNR, a/b]"}, r"ingest\.metrics\[1\]: expected a metric name without '/'"),
    ({"format: json": "format: json\n  select: {k: [1]}"}, r"ingest\.select\.k: input should be a valid string"),
    ({"format: json": "format: xlsx"}, r"ingest\.format: input should be 'csv' or 'json'"),
    ({"format: json": "format: json\n  sheet: 1"}, r"ingest\.sheet: unknown key; expected one of: format, path"),
    ({"task: command": "task: command\nmodule: lab.score"}, r"ingest: an ingest suite reads metrics from files"),
])
def test_suite_ingest_key_is_checked_at_load(tmp_path, edits, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(_lab(tmp_path, edits), tmp_path / "params.yaml")
