"""scripts/check_venv.py (`make install` runs it after the stamp): a venv that lost a package
stops with one line naming it and exit 2; a complete one passes silently."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _check(tmp_path: Path, deps: list[str]) -> subprocess.CompletedProcess:
    listed = ", ".join(f'"{d}"' for d in deps)
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "pyyaml"\ndependencies = [{listed}]\n')
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_venv.py"), str(tmp_path / "pyproject.toml")],
                          capture_output=True, text=True, timeout=60)


def test_complete_environment_passes(tmp_path):
    r = _check(tmp_path, ["numpy>=1.26", "PyYAML>=6.0"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_missing_package_one_line_exit_2(tmp_path):
    r = _check(tmp_path, ["numpy>=1.26", "no-such-dist-xyz>=1.0 ; python_version >= '3'"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no-such-dist-xyz" in r.stderr and "numpy" not in r.stderr
    assert "pyproject.toml" in r.stderr
