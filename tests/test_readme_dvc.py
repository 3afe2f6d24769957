"""README "Ablations": every documented `dvc exp run` states exactly the stages it re-runs. The
truth is derived from dvc.yaml alone: the stages whose `params:` cover a `-S` key (or whose deps
hold an edited file), and every stage downstream of them (a dep inside another stage's output),
among the targets and their upstream closure (every stage without targets)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dvc_render import render  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class Pipeline:
    """dvc.yaml's stages, their params and the graph of their (rendered) deps and outs."""

    def __init__(self, dvc_doc: dict, params: dict):
        self.stages = dvc_doc["stages"]

        def paths(items) -> list[str]:
            return [render(next(iter(i)) if isinstance(i, dict) else i, params).rstrip("/") for i in items or []]

        self.deps = {n: paths(s.get("deps")) for n, s in self.stages.items()}
        outs = {n: paths(s.get("outs")) + paths(s.get("metrics")) + paths(s.get("plots"))
                for n, s in self.stages.items()}
        self.children = {n: {m for m in self.stages if m != n and any(
            _under(d, o) or _under(o, d) for o in outs[n] for d in self.deps[m])} for n in self.stages}

    def _closure(self, start: set[str], step) -> set[str]:
        seen, todo = set(start), list(start)
        while todo:
            for m in step(todo.pop()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    def reruns(self, keys: list[str], targets: list[str], files: list[str]) -> set[str]:
        parents = lambda n: {m for m in self.stages if n in self.children[m]}  # noqa: E731
        scope = self._closure(set(targets), parents) if targets else set(self.stages)

        def covers(p: str, k: str) -> bool:
            return k == p or k.startswith(p + ".") or p.startswith(k + ".")

        changed = {n for n in scope
                   if any(covers(p, k) for p in self.stages[n].get("params", []) for k in keys)
                   or any(_under(f, d) for f in files for d in self.deps[n])}
        return self._closure(changed, lambda n: self.children[n]) & scope


def readme_examples() -> list[tuple[str, list[str], list[str], list[str], set[str]]]:
    """``(line, -S keys, targets, edited files, stated stages)`` of each `dvc exp run` line of the
    Ablations code block (the `# re-runs: a, b` comment on the next line)."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Ablations", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    out = []
    for i, line in enumerate(block):
        if not line.startswith("dvc exp run"):
            continue
        command, _, comment = line.partition("#")
        words = command.split()[3:]
        keys, targets = [], []
        while words:
            word = words.pop(0)
            if word == "-S":
                keys.append(words.pop(0).split("=", 1)[0])
            else:
                targets.append(word)
        files = re.findall(r"after editing (\S+)", comment)
        stated = re.fullmatch(r"\s+# re-runs: (.+)", block[i + 1] if i + 1 < len(block) else "")
        assert stated, f"README: no `# re-runs: ...` line after {line!r}"
        out.append((line, keys, targets, files, {s.strip() for s in stated.group(1).split(",")}))
    return out


EXAMPLES = readme_examples()


def test_the_readme_documents_the_ablations():
    assert [e[0].split("#")[0].strip() for e in EXAMPLES][:3] == [
        "dvc exp run -S cpac.ridge_lambda=0.01 report qualitative_cpac",
        "dvc exp run -S pretrain.epochs=12 report qualitative_cpac",
        "dvc exp run -S cpac.ridge_lambda=0.01"]


@pytest.mark.parametrize("line, keys, targets, files, stated", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_stated_reruns_equal_the_dvc_yaml_graph(line, keys, targets, files, stated):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    pipe = Pipeline(yaml.safe_load((REPO / "dvc.yaml").read_text()), params)
    for key in keys:  # the example sets a setting that exists
        value = params
        for part in key.split("."):
            assert isinstance(value, dict) and part in value, f"{line}: params.yaml has no {key}"
            value = value[part]
    assert set(targets) <= set(pipe.stages), line
    assert all((REPO / f).is_file() for f in files), line
    assert keys or files, f"{line}: nothing changed"
    derived = pipe.reruns(keys, targets, files)
    assert stated == derived, f"{line}: README says {sorted(stated)}; dvc.yaml gives {sorted(derived)}"


def test_the_derivation_on_a_small_graph():
    doc = {"stages": {
        "a": {"cmd": "x", "params": ["p"], "outs": ["out/a"]},
        "b": {"cmd": "x", "deps": ["out/a/last.pt"], "outs": [{"out/b": {"cache": False}}]},
        "c": {"cmd": "x", "deps": ["out/b", "${d.file}"], "params": ["q.r"], "metrics": [{"m.json": {}}]},
        "d": {"cmd": "x", "deps": ["m.json"]},
        "e": {"cmd": "x", "params": ["q"]}}}
    pipe = Pipeline(doc, {"d": {"file": "in.txt"}})
    assert pipe.reruns(["p"], [], []) == {"a", "b", "c", "d"}
    assert pipe.reruns(["p"], ["b"], []) == {"a", "b"}
    assert pipe.reruns(["q.r"], [], []) == {"c", "d", "e"}  # e reads all of q
    assert pipe.reruns(["q.s"], [], []) == {"e"}
    assert pipe.reruns([], ["c"], ["in.txt"]) == {"c"}
