"""Is the environment running this script complete? Every distribution pyproject.toml's
[project] dependencies name (and the project itself) must be installed; otherwise one line on
stderr naming the missing ones and exit 2. `make install` runs it after the stamp, so a venv whose
stamp is current but that lost a package stops here instead of as a traceback inside a stage.
Standard library only (a broken venv may lack everything else)."""
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path


def missing(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    names = [project["name"]] + [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in project["dependencies"]]
    out = []
    for name in names:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def main() -> int:
    pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    lost = missing(pyproject)
    if lost:
        print(f"{sys.prefix}: missing {', '.join(lost)} (required by {pyproject}); "
              f"reinstall: rm -f {sys.prefix}/.installed && make install", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
