"""Suite YAML: schema (pydantic v2), params interpolation and cross-field checks.

``load_suite(path)`` returns a validated :class:`Suite` or raises :class:`SuiteError` whose message
names the file, the key path (``matrix.ckpt.ref``) and what was expected.

One module on purpose (~500 lines): the schema and its checks are one contract, and the checks read
the models' fields and error locations (:func:`_allowed_keys` maps a location back to its model), so
splitting them would put one definition in two places. The plot entries' model and checks are
:mod:`benchmark.plot_spec`.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, PrivateAttr,
                      StringConstraints,
                      ValidationError, field_validator)

from .errors import SuiteError
from .ingest import IngestSpec, spec_problems
from .params import Params, interpolate
from .plot_spec import PlotSpec, plot_problems
from .promote import Requirement, parse_requirement
from .tasks import TaskKind, get_task
from .yamlio import load_yaml

_SCALARS = (str, int, float, bool)
#: A matrix row mapping may set this key: the row's jobs run ``python -m <value>`` instead of the
#: suite's module (e.g. a non-learned baseline answering the same protocol). Not passed as an arg.
ROW_MODULE_KEY = "module"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS)


def _arg_value(value: Any) -> Any:
    if value is None or _is_scalar(value):
        return value
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return value
    raise ValueError("expected a scalar (string, number, bool), a list of scalars, or null; "
                     f"got {_describe(value)}")


def _matrix_row(value: Any) -> Any:
    if value is None or _is_scalar(value):
        return value
    if isinstance(value, dict):
        for key, arg in value.items():
            if not isinstance(key, str):
                raise ValueError(f"arg names must be strings; got {_describe(key)}")
            try:
                _arg_value(arg)
            except ValueError as exc:
                raise ValueError(f"arg {key!r}: {exc}") from None
        return value
    raise ValueError("expected a scalar (assigned to the arg named like the axis) or a mapping of "
                     f"args; got {_describe(value)}")


def _seed_value(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an integer or a string seed; got {_describe(value)}")
    return value


def _seed_spec(value: Any) -> Any:
    """``[0, 1, 2]`` (fixed seeds, passed as written) or ``3`` (replicates seeded from root_seed)."""
    if isinstance(value, list):
        for i, seed in enumerate(value):
            try:
                _seed_value(seed)
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"expected a replicate count >= 1; got {value}")
        return value
    raise ValueError("expected a list of fixed seeds ([0, 1, 2]) or a replicate count (3, with "
                     f"root_seed); got {_describe(value)}")


def _root_seed(value: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer; got {_describe(value)}")
    return value


ArgValue = Annotated[Any, AfterValidator(_arg_value)]
MatrixRow = Annotated[Any, AfterValidator(_matrix_row)]
SeedValue = Annotated[Any, AfterValidator(_seed_value)]
SeedSpec = Annotated[Any, AfterValidator(_seed_spec)]
RootSeed = Annotated[Any, AfterValidator(_root_seed)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$", max_length=100)]  # it names files and folders


def _axis_list(value: Any) -> Any:
    """``K`` is shorthand for ``[K]`` in a pivot."""
    return [value] if isinstance(value, str) else value


AxisList = Annotated[list[str], BeforeValidator(_axis_list)]


class PivotSpec(BaseModel):
    """The table's wide (paper) form: the same cells rearranged, ``rows`` axes down and ``cols``
    axes across (together exactly the table's rows and cols), one column per col key × metric
    (``metrics``: a subset of the table's; default all). Rendered beside the long table and as
    the table's LaTeX form (see :mod:`benchmark.pivot`)."""

    model_config = ConfigDict(extra="forbid")
    rows: AxisList = []
    cols: AxisList
    metrics: Optional[list[str]] = None


class TableSpec(BaseModel):
    """One rendered table: rows/cols are matrix axes (or the seed arg); cells are seed means.
    ``pivot`` (optional) declares its wide form as well (:class:`PivotSpec`)."""

    model_config = ConfigDict(extra="forbid")
    title: Optional[str] = None
    rows: list[str] = []
    cols: list[str] = []
    metrics: Optional[list[str]] = None
    where: dict[str, str] = {}
    pivot: Optional[PivotSpec] = None


class PromoteSpec(BaseModel):
    """Promotion gate: the candidate row must satisfy every requirement against the reference."""

    model_config = ConfigDict(extra="forbid")
    candidate: dict[str, str]
    require: dict[str, str]


class SensitivitySpec(BaseModel):
    """Each non-reference row of the reference axes is a planted defect that must move ``metric``
    by more than ``min_std`` seed standard deviations (see :mod:`benchmark.sensitivity`)."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    min_std: float = 3.0


class Suite(BaseModel):
    """A validated suite. Values are already interpolated from params.yaml."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    task: str
    module: Optional[str] = None
    program: Optional[list[str]] = None
    description: str = ""
    args: dict[str, ArgValue] = {}
    matrix: dict[str, dict[str, MatrixRow]] = {}
    seeds: dict[str, SeedSpec] = {}
    root_seed: Optional[RootSeed] = None
    reference: dict[str, str] = {}
    tables: list[TableSpec] = []
    out_flag: str = "--out_json"
    promote: Optional[PromoteSpec] = None
    sensitivity: Optional[SensitivitySpec] = None
    inputs: list[str] = []
    outputs: list[str] = []
    depends_on: list[str] = []
    plots: list[PlotSpec] = []
    plugins: list[str] = []   # plugin modules the suite needs (loaded before ``task`` is looked up)
    ingest: Optional[IngestSpec] = None  # metrics read from files instead of a command: benchmark.ingest

    _source: Path = PrivateAttr(default=Path("<memory>"))
    _source_sha256: str = PrivateAttr(default="")
    _params: Optional[Params] = PrivateAttr(default=None)
    _requirements: list[Requirement] = PrivateAttr(default_factory=list)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            get_task(value)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return value

    # --- convenience ----------------------------------------------------------------------
    @property
    def source(self) -> Path:
        """The YAML file this suite was loaded from."""
        return self._source

    @property
    def source_sha256(self) -> str:
        return self._source_sha256

    @property
    def params_used(self) -> dict[str, Any]:
        """params.yaml entries this suite referenced, dotted path -> value."""
        return dict(self._params.used) if self._params else {}

    @property
    def params_path(self) -> Optional[Path]:
        return self._params.path if self._params else None

    @property
    def kind(self) -> TaskKind:
        kind = get_task(self.task)
        return self.ingest.task_kind(kind) if self.ingest is not None else kind

    @property
    def axes(self) -> list[str]:
        return list(self.matrix)

    @property
    def seed_arg(self) -> Optional[str]:
        return next(iter(self.seeds), None)

    @property
    def seeds_derived(self) -> bool:
        """True if the seed arg's values are derived from ``root_seed`` (``seeds: {arg: N}``)."""
        return self.seed_arg is not None and not isinstance(self.seeds[self.seed_arg], list)

    @property
    def seed_values(self) -> list[Any]:
        """Values of the seed axis: the fixed seeds, or replicate indices ``0..N-1`` if derived
        (the job's tag is the index; its arg is ``seeds.derive_seed(root_seed, identity)``)."""
        if not self.seed_arg:
            return []
        spec = self.seeds[self.seed_arg]
        return list(spec) if isinstance(spec, list) else list(range(spec))

    @property
    def requirements(self) -> list[Requirement]:
        return list(self._requirements)

    def axis_rows(self, axis: str) -> list[Any]:
        """Row names of a matrix axis, or the seed values for the seed arg."""
        if axis == self.seed_arg:
            return self.seed_values
        return list(self.matrix[axis])


# --- loading ------------------------------------------------------------------------------

def load_suite(path: Path | str, params_path: Path | str = "params.yaml") -> Suite:
    """Read, interpolate and validate a suite YAML; raise :class:`SuiteError` on any problem."""
    path = Path(path)
    raw = load_yaml(path, what="suite file")
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: expected a mapping of suite keys at the top level; got "
                         f"{type(raw).__name__}")
    params = Params(Path(params_path))
    raw = dict(raw)
    for key in ("args", "matrix", "seeds", "depends_on"):
        if key in raw:
            raw[key] = interpolate(raw[key], params, file=path, keypath=key)
    _load_suite_plugins(raw.get("plugins"), path)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError(_format_validation_error(path, exc)) from None
    suite._source = path
    suite._source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    suite._params = params
    _cross_check(suite, path)
    return suite



def _load_suite_plugins(value: Any, path: Path) -> None:
    """Load the plugins a suite names (``plugins: [module, ...]``) before its task is looked up;
    a value of another type is left to the schema's message."""
    from .plugins import PluginError, ensure_loaded, load_plugins

    ensure_loaded()  # the installed and $BENCH_PLUGINS plugins fail with their own message
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        try:
            load_plugins(value, origin="suite key")
        except PluginError as exc:
            raise SuiteError(f"{path}: plugins: {exc}") from None


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            out += " (as a key)"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Suite
    if loc and loc[0] == "tables":
        model = PivotSpec if len(loc) > 2 and loc[2] == "pivot" else TableSpec
    elif loc and loc[0] == "promote":
        model = PromoteSpec
    elif loc and loc[0] == "plots":
        model = PlotSpec
    elif loc and loc[0] == "sensitivity":
        model = SensitivitySpec
    elif loc and loc[0] == "ingest":
        model = IngestSpec
    return list(model.model_fields)


_INDEX_PREFIX = re.compile(r"^\[(\d+)\]: ")


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc, kind, msg = err["loc"], err["type"], err["msg"]
        if kind == "extra_forbidden":
            text = f"unknown key; expected one of: {', '.join(_allowed_keys(loc))}"
        elif kind == "missing":
            text = "required key is missing"
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
            index = _INDEX_PREFIX.match(text)  # "[3]: ..." from a validator of a whole list
            if index:
                loc, text = (*loc, int(index.group(1))), text[index.end():]
        else:
            text = f"{msg[0].lower()}{msg[1:]}; got {_describe(err.get('input'))}"
        lines.append(f"{path}: {_loc(loc)}: {text}")
    if len(lines) > 1:
        lines[1:] = ["  " + line for line in lines[1:]]
    return "\n".join(lines)


#: The most jobs one suite may expand to (each is a process and a result file): a count beyond it
#: is a typo (``seeds: {seed: 100000000}``, an axis too many), refused before it is expanded.
MAX_JOBS = 100_000


def _job_count(suite: Suite) -> int:
    """Matrix points times seeds, from the counts alone (nothing is expanded)."""
    n = 1
    for rows in suite.matrix.values():
        n *= len(rows)
    if suite.seed_arg:
        spec = suite.seeds[suite.seed_arg]
        n *= len(spec) if isinstance(spec, list) else spec
    return n


def _cross_check(suite: Suite, path: Path) -> None:
    """Checks that span several keys; fills table defaults. Raises SuiteError naming the key."""

    def fail(key: str, text: str) -> None:
        raise SuiteError(f"{path}: {key}: {text}")

    n_jobs = _job_count(suite)
    if n_jobs > MAX_JOBS:
        fail("matrix" if suite.matrix else "seeds",
             f"{n_jobs} jobs (matrix rows x seeds); at most {MAX_JOBS} per suite: split it or check the counts")

    if suite.ingest is not None and (suite.module is not None or suite.program is not None):
        fail("ingest", "an ingest suite reads metrics from files: drop `module` / `program`")
    if suite.ingest is None and (suite.module is None) == (suite.program is None):
        fail("module", "expected exactly one of `module` (python -m MODULE) or `program` (argv list)")
    if suite.program is not None and not suite.program:
        fail("program", "expected a non-empty argv list, e.g. [python, path/to/scorer.py]")
    if not suite.out_flag.startswith("-"):
        fail("out_flag", f"expected a flag such as --out_json; got {suite.out_flag!r}")
    out_arg = suite.out_flag.lstrip("-")
    for key in suite.args:
        if key.lstrip("-") == out_arg:
            fail(f"args.{key}", f"conflicts with out_flag {suite.out_flag} (the runner sets it)")
    for axis, rows in suite.matrix.items():
        if not rows:
            fail(f"matrix.{axis}", "expected at least one row")
    if len(suite.seeds) > 1:
        fail("seeds", f"expected one seed arg -> list of values; got {len(suite.seeds)} keys "
                      f"({', '.join(suite.seeds)})")
    if suite.seed_arg is not None:
        values = suite.seed_values
        if not values:
            fail(f"seeds.{suite.seed_arg}", "expected a non-empty list of seeds")
        if len(set(map(str, values))) != len(values):
            fail(f"seeds.{suite.seed_arg}", f"duplicate seed values in {values}")
        if suite.seed_arg in suite.matrix:
            fail(f"seeds.{suite.seed_arg}", "the seed arg must not also be a matrix axis")
    _check_root_seed(suite, fail)

    for axis, rows in suite.matrix.items():
        for row, value in rows.items():
            if isinstance(value, dict) and ROW_MODULE_KEY in value:
                module = value[ROW_MODULE_KEY]
                if suite.module is None:
                    fail(f"matrix.{axis}.{row}.{ROW_MODULE_KEY}", "a row may replace the suite's "
                         "`module`, not a `program`; give the suite a module")
                if not isinstance(module, str) or not _DOTTED.match(module):
                    fail(f"matrix.{axis}.{row}.{ROW_MODULE_KEY}",
                         f"expected a dotted module name (python -m MODULE); got {module!r}")
    known_args = set(suite.args) | {a for a, rows in suite.matrix.items()
                                     if any(not isinstance(v, dict) for v in rows.values())}
    known_args |= {k for rows in suite.matrix.values() for v in rows.values() if isinstance(v, dict)
                   for k in v if k != ROW_MODULE_KEY}
    if suite.ingest is not None:
        for key, text in spec_problems(suite.ingest, known_args | {suite.seed_arg} - {None}):
            fail(key, text)
    for key, names, what in (("inputs", suite.inputs, "an input file"),
                             ("outputs", suite.outputs, "a path the job writes")):
        for i, name in enumerate(names):
            if name not in known_args:
                fail(f"{key}[{i}]", f"unknown arg {name!r}; expected an arg naming {what} "
                                    f"({', '.join(sorted(known_args)) or 'no args'})")

    for i, dep in enumerate(suite.depends_on):
        if not isinstance(dep, str) or not dep.strip():
            fail(f"depends_on[{i}]", f"expected a file path; got {dep!r}")
    axes = suite.axes
    placeable = axes + ([suite.seed_arg] if suite.seed_arg else [])

    def check_rows_ref(key: str, mapping: dict[str, str]) -> None:
        for axis, row in mapping.items():
            if axis not in suite.matrix:
                fail(f"{key}.{axis}", f"unknown axis; expected one of: {', '.join(axes) or '(no matrix)'}")
            if row not in suite.matrix[axis]:
                fail(f"{key}.{axis}", f"unknown row {row!r}; expected one of: {', '.join(suite.matrix[axis])}")

    check_rows_ref("reference", suite.reference)

    kind = suite.kind
    if not suite.tables:
        suite.tables = [TableSpec(rows=list(axes))]
    for i, table in enumerate(suite.tables):
        key = f"tables[{i}]"
        seen: set[str] = set()
        for field in ("rows", "cols"):
            for axis in getattr(table, field):
                if axis not in placeable:
                    fail(f"{key}.{field}", f"unknown axis {axis!r}; expected one of: {', '.join(placeable)}")
                if axis in seen:
                    fail(f"{key}.{field}", f"axis {axis!r} is placed twice")
                seen.add(axis)
        check_rows_ref(f"{key}.where", table.where)
        for axis in table.where:
            if axis in seen:
                fail(f"{key}.where.{axis}", "axis is already a table row or column")
            seen.add(axis)
        for axis in axes:
            if axis not in seen:
                fail(key, f"matrix axis {axis!r} is not placed: add it to rows, cols or where "
                          "(only the seed axis is averaged over)")
        if table.metrics is None:
            table.metrics = list(kind.default_metrics)
        if not table.metrics:
            fail(f"{key}.metrics", f"expected a list of metric names (task {kind.name!r} has no defaults)")
        if table.pivot is not None:
            _check_pivot(table, f"{key}.pivot", fail)

    if suite.promote is not None:
        if not suite.reference:
            fail("promote", "needs a `reference` row to compare the candidate with")
        check_rows_ref("promote.candidate", suite.promote.candidate)
        if not suite.promote.candidate:
            fail("promote.candidate", "expected a mapping axis -> row")
        if not suite.promote.require:
            fail("promote.require", "expected at least one metric requirement")
        reqs = []
        for metric, text in suite.promote.require.items():
            try:
                reqs.append(parse_requirement(metric, text))
            except ValueError as exc:
                fail(f"promote.require.{metric}", str(exc))
        suite._requirements = reqs

    if suite.sensitivity is not None:
        if not suite.reference:
            fail("sensitivity", "needs a `reference` row (the intact pipeline) to compare each defect row with")
        if suite.sensitivity.min_std <= 0:
            fail("sensitivity.min_std", f"expected a number > 0; got {suite.sensitivity.min_std}")
        if len(suite.seed_values) < 2:
            fail("sensitivity", "needs at least two seeds (the noise level the defect must exceed)")

    for key, text in plot_problems(suite):
        fail(key, text)


def _check_pivot(table: TableSpec, key: str, fail) -> None:
    """A pivot rearranges the table's own cells: its rows and cols are the table's rows and cols
    (each once, at least one across) and its metrics are among the table's."""
    pivot = table.pivot
    placed = [*table.rows, *table.cols]
    seen: set[str] = set()
    for field in ("rows", "cols"):
        for axis in getattr(pivot, field):
            if axis not in placed:
                fail(f"{key}.{field}", f"axis {axis!r} is not a row or column of the table; expected "
                                       f"the table's axes ({', '.join(placed) or 'none'}) rearranged")
            if axis in seen:
                fail(f"{key}.{field}", f"axis {axis!r} is placed twice")
            seen.add(axis)
    if not pivot.cols:
        fail(f"{key}.cols", "expected at least one axis across (e.g. cols: [K])")
    missing = [a for a in placed if a not in seen]
    if missing:
        fail(key, f"axis {missing[0]!r} of the table is not placed: add it to the pivot's rows or cols")
    if pivot.metrics is None:
        pivot.metrics = list(table.metrics)
    if not pivot.metrics:
        fail(f"{key}.metrics", "expected at least one of the table's metrics")
    for metric in pivot.metrics:
        if metric not in table.metrics:
            fail(f"{key}.metrics", f"{metric!r} is not a metric of the table; expected one of: "
                                   f"{', '.join(table.metrics)}")


def _check_root_seed(suite: Suite, fail) -> None:
    """Derived seeds need ``root_seed``; ``root_seed`` needs something to derive; a derived seed
    arg must not also be fixed by ``args`` or a matrix row."""
    arg = suite.seed_arg
    if suite.seeds_derived:
        if suite.root_seed is None:
            fail(f"seeds.{arg}", f"a replicate count ({suite.seeds[arg]}) derives each seed from "
                                 "`root_seed`; add `root_seed: <int>` or list fixed seeds ([0, 1, 2])")
        if arg in suite.args:
            fail(f"args.{arg}", f"fixes the seed arg that seeds.{arg} derives from root_seed; remove "
                                "one of them")
        for axis, rows in suite.matrix.items():
            for row, value in rows.items():
                if isinstance(value, dict) and arg in value:
                    fail(f"matrix.{axis}.{row}.{arg}", f"fixes the seed arg that seeds.{arg} derives "
                                                       "from root_seed; remove one of them")
    elif suite.root_seed is not None:
        fail("root_seed", "no seed is derived from it: write `seeds: {ARG: N}` (N replicates seeded "
                          "from root_seed and the job's identity) or drop root_seed (fixed seeds "
                          "are passed as written)")
