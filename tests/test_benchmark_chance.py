"""Chance levels next to the metric, diagnostics never ranked, rows at chance not ranked, and the
collapsed-embeddings guard — each on planted results, against hand computations."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

from planted_results import cells, flags_by_row, plant  # noqa: E402

from benchmark import guards  # noqa: E402
from benchmark.report import build_report  # noqa: E402
from benchmark.tasks import CHANCE_MARGIN_SE, get_task  # noqa: E402
from nepa3d.protocol_thresholds import EMBED_SPREAD_MIN  # noqa: E402


def _ucpr(n: int, **m) -> dict:
    base = {"r@1": 0.5, "r@5": 0.8, "r@10": 0.9, "mAP": 0.6, "mean_rank": 3.0,
            "expected_random_r@1": 1.0 / n}
    return {**base, **m}


def test_retrieval_chance_levels_match_random_rankings():
    kind = get_task("ucpr")
    m = _ucpr(6)
    # brute force over every rank the relevant item can take (uniform over 1..6)
    ranks = range(1, 7)
    assert kind.chance_of("r@1").level(m)[0] == 1 / 6
    assert kind.chance_of("r@5").level(m)[0] == 5 / 6
    assert kind.chance_of("r@10").level(m)[0] == 1.0  # k >= N
    mrr = sum(Fraction(1, r) for r in ranks) / 6
    assert math.isclose(kind.chance_of("mAP").level(m)[0], float(mrr))
    mrr_var = sum(Fraction(1, r * r) for r in ranks) / 6 - mrr ** 2
    assert math.isclose(kind.chance_of("mAP").level(m)[1], math.sqrt(float(mrr_var) / 6))
    assert kind.chance_of("mean_rank").level(m) == (3.5, math.sqrt((36 - 1) / 12 / 6))
    # binomial standard error of R@1 over 6 queries: sqrt(p (1 - p) / 6)
    assert math.isclose(kind.chance_of("r@1").level(m)[1], math.sqrt((1 / 6) * (5 / 6) / 6))
    assert kind.chance_of("r@1").level({"r@1": 0.5}) is None  # the result does not say N


def test_classification_chance_is_the_majority_rate():
    kind = get_task("cls")
    level = kind.chance_of("test_acc").level({"test_acc": 0.5, "test_majority_rate": 0.25, "n_test": 48})
    assert level == (0.25, math.sqrt(0.25 * 0.75 / 48))
    assert kind.is_diagnostic("test_majority_rate") and not kind.is_diagnostic("test_acc")
    assert get_task("ucpr").is_diagnostic("expected_random_r@1")


def _readout_lines(md: str) -> list[str]:
    """Lines of the Readout section (one line per column and metric)."""
    section = md.split("## Readout", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in section.splitlines() if ln.startswith("- ")]


def test_chance_column_and_readout_skip_rows_at_chance(tmp_path):
    n = 100  # test samples; majority rate 0.1 -> se 0.03, at chance up to 0.1 + 2 se = 0.16
    se = math.sqrt(0.1 * 0.9 / n)
    rows = {
        "good": {"metrics": {"test_acc": 0.60, "test_majority_rate": 0.1, "n_test": n}},
        "weak": {"metrics": {"test_acc": 0.30, "test_majority_rate": 0.1, "n_test": n}},
        "noise": {"metrics": {"test_acc": 0.1 + 0.9 * CHANCE_MARGIN_SE * se, "test_majority_rate": 0.1,
                              "n_test": n}},
    }
    suite, jobs = plant(tmp_path, "cls", rows, reference={"row": "good"},
                        tables=[{"rows": ["row"], "metrics": ["test_acc", "test_majority_rate"]}])
    md = build_report(suite, jobs).markdown
    header = cells(md, "row")[0]
    assert header[:4] == ["row", "test_acc ↑", "test_acc chance", "test_majority_rate"]  # diagnostic: no arrow
    assert cells(md, "good")[0][2] == "0.1000" and cells(md, "noise")[0][2] == "0.1000"
    readout = _readout_lines(md)
    assert len(readout) == 1 and readout[0].startswith("- test_acc ↑: ")  # the majority rate is never ranked
    assert readout[0].startswith("- test_acc ↑: good 0.6000 (Δ ref)") or "good 0.6000 (ref)" in readout[0]
    assert "; next weak 0.3000" in readout[0]
    assert readout[0].endswith("; at chance, not ranked: noise")
    assert "`chance`: what a no-skill method scores" in md


def test_every_row_at_chance_is_not_ranked(tmp_path):
    m = lambda r1: {"metrics": _ucpr(60, **{"r@1": r1, "r@5": 5 / 60, "r@10": 10 / 60, "mAP": 0.078,  # noqa: E731
                                            "mean_rank": 30.5})}
    suite, jobs = plant(tmp_path, "ucpr", {"a": m(1 / 60), "b": m(2 / 60)}, reference={"row": "a"},
                        tables=[{"rows": ["row"], "metrics": ["r@1", "mAP"]}])
    md = build_report(suite, jobs).markdown
    readout = _readout_lines(md)
    assert readout == ["- r@1 ↑: every row at chance level, not ranked", "- mAP ↑: every row at chance level, not ranked"]
    assert cells(md, "a")[0][2] == f"{1 / 60:.4f}"  # r@1 chance = 1/N next to r@1


def test_collapsed_embeddings_guard(tmp_path):
    spread = lambda q, g: {"metrics": _ucpr(60, embed_spread_query=q, embed_spread_gallery=g)}  # noqa: E731
    suite, jobs = plant(tmp_path, "ucpr", {
        "collapsed": spread(3e-4, 2e-2),
        "edge": spread(EMBED_SPREAD_MIN, EMBED_SPREAD_MIN),
        "healthy": spread(0.9, 0.8),
        "unrecorded": {"metrics": _ucpr(60)}})
    rows = flags_by_row(suite, jobs)
    assert rows["collapsed"].flags == ["collapsed_embeddings"]
    assert rows["collapsed"].reasons["collapsed_embeddings"] == (
        f"embed_spread_query = 3.00e-04 < {EMBED_SPREAD_MIN:g}")
    assert rows["edge"].flags == rows["healthy"].flags == rows["unrecorded"].flags == []
    assert not guards.is_blocking("collapsed_embeddings")
    md = build_report(suite, jobs).markdown
    assert "**collapsed_embeddings**" in md


def test_planted_defect_results_are_blocking(tmp_path):
    assert guards.is_blocking("planted_defect:shuffled_labels")
    assert guards.describe("planted_defect:shuffled_labels").startswith("computed with a deliberately")


def test_spread_threshold_is_defined_once():
    """The guard's threshold lives in nepa3d.protocol_thresholds only: no other module repeats
    the number (tests/test_thresholds.py checks every protocol threshold)."""
    root = Path(__file__).resolve().parents[1]
    text = str(EMBED_SPREAD_MIN)
    hits = [p for p in itertools.chain(root.glob("benchmark/*.py"), root.glob("nepa3d/**/*.py"))
            if "EMBED_SPREAD_MIN =" in p.read_text() or f"spread < {text}" in p.read_text()]
    assert [p.name for p in hits] == ["protocol_thresholds.py"]
