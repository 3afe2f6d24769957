"""The repository's documents stand on their own.

* No file under nepa3d/, benchmark/, suites/ or README.md cites a document a reader of the
  repository does not have (the lab's notes, the first design document, numbered sections of
  either) unless the citation names a target in the repository or the original code's public
  repository (KohsukeIde/3D-NEPA) next to it.
* docs/protocols.md has one ``## <stem>`` section per suite of suites/ (reports link
  ``docs/protocols.md#<stem>``), and no ``##`` section for a suite that does not exist.
* Every ``docs/protocols.md#<anchor>`` written in the repository names a heading of that page.
* The thresholds the page quotes are the values of nepa3d/protocol_thresholds.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nepa3d import protocol_thresholds

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO / "docs" / "protocols.md"
SCANNED = ("nepa3d", "benchmark", "suites", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg"}

#: What a citation of an unavailable document looks like.
CITATION = re.compile(
    r"§\s*\d"                              # a numbered section: "§8.3", "reference §1.1"
    r"|\blab[\s-]+notes?\b"                # the lab's notes
    r"|(?-i:\bDESIGN(?:\.md)?\b)"           # the first design document (not "design matrix")
    r"|\bdesign[\s-]+doc(?:ument)?s?\b"
    r"|\breference[\s-]+facts?\b"
    r"|\bactive-track\b|\bcompletion-ablations\b",   # the notes' file names
    re.IGNORECASE)
#: A target a reader has: a page of docs/, the lab's recorded commands, the original's repository,
#: or a published work named by its *Title* (a book's section, e.g. Ericson's "§5.1.5").
TARGET = re.compile(r"docs/[\w./-]+\.md|tests/fixtures/lab_commands\.sh|KohsukeIde/3D-NEPA"
                    r"|\*[A-Z][\w -]+\*")

#: Known citations in files other work owns this hour: (path, text of the offending line).
#: Each is a line that still cites the lab's notes; empty this list once that work has merged.
ALLOWED = [
]


def _scanned_files() -> list[Path]:
    out = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            out.append(path)
            continue
        out += [p for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return out


def dangling_citations(rel: str, text: str) -> list[str]:
    """``"rel:line: text"`` for each citation in ``text`` (the file ``rel``) with no repository
    target on its line or the next (a citation wrapped over two lines keeps its target)."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        # a citation may wrap ("lab\nnotes"): look at this line joined with the next
        window = line + " " + (lines[i + 1] if i + 1 < len(lines) else "")
        hits = [m for m in CITATION.finditer(window) if m.start() < len(line)]
        if not hits or TARGET.search(window):
            continue
        if any(rel == p and text in line for p, text in ALLOWED):
            continue
        out.append(f"{rel}:{i + 1}: {line.strip()}")
    return out


def test_no_dangling_citations():
    found = [hit for path in _scanned_files()
             for hit in dangling_citations(str(path.relative_to(REPO)),
                                           path.read_text(encoding="utf-8", errors="replace"))]
    assert not found, ("citations of documents the repository does not hold (name a target: "
                       "docs/protocols.md#..., a module, the fact itself, or KohsukeIde/3D-NEPA):\n"
                       + "\n".join(found))


@pytest.mark.parametrize("text, dangling", [
    ("see lab notes §8.3 for the numbers", True),
    ("(reference §1.1 step 2)", True),
    ("the envelope of DESIGN.md", True),
    ("as the lab\nnotes say", True),
    ("see docs/protocols.md#cpac_main (lab notes)", False),
    ("the original (KohsukeIde/3D-NEPA @ 737d98f, §1.1)", False),
    ('MARKS = "†‡§¶"  # footnote marks', False),
    ("the reference axis of a table", False),
    ("so that the design matrix never has to be held", False),
    ("Ericson, *Real-Time Collision Detection* §5.1.5", False),
])
def test_the_citation_rule(text, dangling):
    assert bool(dangling_citations("docs/example.md", text)) == dangling


def test_allow_list_is_only_the_known_offenders():
    """Each allowed line is a citation the rule would flag (nothing else hides in the list)."""
    for rel, line in ALLOWED:
        assert dangling_citations("elsewhere.txt", line), (rel, line)


def _headings(level: str) -> list[str]:
    return re.findall(rf"^{level} (.+?)\s*$", PROTOCOLS.read_text(), re.M)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_suite_has_a_protocol_section():
    stems = sorted(p.stem for p in (REPO / "suites").glob("*.yaml"))
    sections = _headings("##")
    missing = [s for s in stems if s not in sections]
    unknown = [s for s in sections if s not in stems]
    assert not missing, f"suites without a `## <stem>` section in docs/protocols.md: {missing}"
    assert not unknown, f"`##` sections of docs/protocols.md that name no suite: {unknown}"
    assert len(sections) == len(set(sections)), "a suite has two sections"


def test_protocol_anchors_resolve():
    anchors = {_slug(h) for level in ("#", "##", "###") for h in _headings(level)}
    bad = []
    for path in [*_scanned_files(), PROTOCOLS, *sorted((REPO / "tests").glob("*.py"))]:
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"(?:docs/protocols\.md|\]\()#([\w-]+)", text):
            if path != PROTOCOLS and not m.group(0).startswith("docs/"):
                continue  # a ](#x) link only counts inside the page itself
            if m.group(1) not in anchors:
                bad.append(f"{path.relative_to(REPO)}: #{m.group(1)}")
    assert not bad, "links to docs/protocols.md anchors that do not exist:\n" + "\n".join(bad)


def test_quoted_thresholds_are_the_defined_ones():
    quoted = re.findall(r"`(EASY_PAIR_R1|MAJORITY_TOL|EMBED_SPREAD_MIN)` = ([0-9.]+)", PROTOCOLS.read_text())
    assert {name for name, _ in quoted} == {"EASY_PAIR_R1", "MAJORITY_TOL", "EMBED_SPREAD_MIN"}
    for name, value in quoted:
        assert float(value) == getattr(protocol_thresholds, name), name
