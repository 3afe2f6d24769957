"""Mesh files as they come: what trimesh does not read, and why a file gave no triangles.

- :func:`read_ply`           our own PLY reader (ASCII and binary, either byte order), used
  where trimesh's is not enough: ``tristrips`` elements (trimesh ignores them) and binary
  lists of varying length (mixed triangles / quads / polygons, strips; trimesh refuses them).
- :func:`fan_triangles`, :func:`strip_triangles`  pure: polygons and strips -> triangles.
- :func:`obj_absolute_indices` OBJ text with relative (negative) face indices made absolute:
  trimesh resolves them against the whole file's vertex list, not the vertices read so far,
  so a file with several bodies silently gets the wrong triangles.
- :func:`off_without_comments` OFF text without ``#`` comments (trimesh's comment stripping
  duplicates part of the body when a comment sits below the second line).
- :func:`truncation_reason`  why an OFF / ASCII PLY file holds fewer rows than its header
  declares (trimesh reads the rows that are there and says nothing).
- :func:`faceless_reason`    why a file gave no triangle faces, in words (empty file,
  header only, truncated binary STL, a point cloud, only lines / strips, nothing parsable).

Everything here is pure apart from reading the file named by the caller.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np


class MeshError(ValueError):
    """A mesh that cannot be turned into a cache (empty, non-finite, degenerate)."""


# ----------------------------------------------------------------------------------------
# polygons and strips -> triangles (pure)


def _as_rows(rows) -> list[np.ndarray]:
    return [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]


def fan_triangles(polygons) -> np.ndarray:
    """Fan triangulation ``(p0, p_i, p_i+1)`` of each polygon (exact for convex polygons).

    Args:
        polygons: sequence of 1-D index arrays; rows with fewer than 3 indices give nothing.

    Returns:
        ``(T, 3)`` int64, ``T = sum(max(len(p) - 2, 0))``, in polygon order.
    """
    out = [np.stack([np.full(len(p) - 2, p[0]), p[1:-1], p[2:]], axis=1)
           for p in _as_rows(polygons) if len(p) >= 3]
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)


def strip_triangles(strips) -> np.ndarray:
    """Triangles of triangle strips (PLY ``tristrips``): ``-1`` restarts a strip.

    Triangle ``i`` of a run ``s`` is ``(s[i], s[i+1], s[i+2])``, with the first two swapped for
    odd ``i`` so that every triangle keeps the strip's winding. Degenerate triangles (the
    repeated indices strips use to turn corners) are kept; cleaning drops them.

    Args:
        strips: sequence of 1-D index arrays.

    Returns:
        ``(T, 3)`` int64, in strip order.
    """
    out = []
    for row in _as_rows(strips):
        cuts = np.flatnonzero(row < 0)
        for run in np.split(row, cuts):
            run = run[run >= 0]
            if len(run) < 3:
                continue
            tri = np.stack([run[:-2], run[1:-1], run[2:]], axis=1)
            odd = np.arange(len(tri)) % 2 == 1
            tri[odd, 0], tri[odd, 1] = run[1:-1][odd], run[:-2][odd]
            out.append(tri)
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)


# ----------------------------------------------------------------------------------------
# PLY


PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
             "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
             "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
             "float64": "f8"}
PLY_INDEX_NAMES = ("vertex_indices", "vertex_index")


@dataclass
class PlyElement:
    """One ``element`` of a PLY header: properties are ``(name, dtype, list count dtype or
    None)``."""

    name: str
    count: int
    props: list[tuple[str, str, str | None]] = field(default_factory=list)


@dataclass
class PlyMesh:
    """What :func:`read_ply` found: ``vertices (V, 3)`` float64, ``faces (F, 3)`` int64 (fan-
    triangulated ``face`` polygons, then ``tristrips`` triangles), and the element counts."""

    vertices: np.ndarray
    faces: np.ndarray
    counts: dict[str, int]


def _ply_header(fh) -> tuple[str, list[PlyElement]]:
    """``(format, elements)`` from an open binary PLY file, positioned after ``end_header``."""
    if fh.readline().strip() != b"ply":
        raise MeshError("not a PLY file (no 'ply' magic line)")
    fmt, elements = "", []
    for raw in fh:
        words = raw.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            if not fmt:
                raise MeshError("PLY header has no 'format' line")
            return fmt, elements
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append(PlyElement(words[1], int(words[2])))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].props.append((words[4], PLY_TYPES[words[3]], PLY_TYPES[words[2]]))
            elif words[0] == "property":
                elements[-1].props.append((words[2], PLY_TYPES[words[1]], None))
        except (IndexError, KeyError, ValueError) as e:
            raise MeshError(f"malformed PLY header line {raw.strip()[:60]!r}") from e
    raise MeshError("PLY header has no 'end_header' line")


def _ply_rows_ascii(el: PlyElement, tokens: list[bytes], pos: int) -> tuple[dict, int]:
    """Read ``el.count`` rows from whitespace tokens starting at ``pos``: ``({prop: values},
    next pos)`` with scalars as an array and lists as a list of arrays."""
    if all(c is None for _, _, c in el.props):  # fast path: fixed-width rows
        n = len(el.props) * el.count
        if pos + n > len(tokens):
            raise MeshError(f"PLY body ends inside element '{el.name}' (truncated)")
        table = np.array(tokens[pos:pos + n], dtype=np.float64).reshape(el.count, len(el.props))
        return {name: table[:, j] for j, (name, _, _) in enumerate(el.props)}, pos + n
    out: dict[str, list] = {name: [] for name, _, _ in el.props}
    try:
        for _ in range(el.count):
            for name, _, count_type in el.props:
                if count_type is None:
                    out[name].append(float(tokens[pos]))
                    pos += 1
                else:
                    k = int(tokens[pos])
                    out[name].append(np.array(tokens[pos + 1:pos + 1 + k], dtype=np.int64))
                    if len(out[name][-1]) != k:
                        raise IndexError
                    pos += 1 + k
    except (IndexError, ValueError) as e:
        raise MeshError(f"PLY body ends inside element '{el.name}' (truncated or malformed)") \
            from e
    return out, pos


def _ply_rows_binary(el: PlyElement, buf: bytes, pos: int, order: str) -> tuple[dict, int]:
    """Binary counterpart of :func:`_ply_rows_ascii` (``order``: '<' or '>')."""
    if all(c is None for _, _, c in el.props):
        dtype = np.dtype([(f"p{j}", order + t) for j, (_, t, _) in enumerate(el.props)])
        end = pos + dtype.itemsize * el.count
        if end > len(buf):
            raise MeshError(f"PLY body ends inside element '{el.name}' (truncated)")
        rows = np.frombuffer(buf, dtype=dtype, count=el.count, offset=pos)
        return {name: rows[f"p{j}"].astype(np.float64)
                for j, (name, _, _) in enumerate(el.props)}, end
    out: dict[str, list] = {name: [] for name, _, _ in el.props}
    try:
        for _ in range(el.count):
            for name, t, count_type in el.props:
                if count_type is None:
                    out[name].append(float(np.frombuffer(buf, order + t, 1, pos)[0]))
                    pos += np.dtype(t).itemsize
                else:
                    k = int(np.frombuffer(buf, order + count_type, 1, pos)[0])
                    pos += np.dtype(count_type).itemsize
                    out[name].append(np.frombuffer(buf, order + t, k, pos).astype(np.int64))
                    pos += k * np.dtype(t).itemsize
    except ValueError as e:  # np.frombuffer past the end of the buffer
        raise MeshError(f"PLY body ends inside element '{el.name}' (truncated)") from e
    return out, pos


def _index_lists(data: dict, el: PlyElement) -> list:
    for name in PLY_INDEX_NAMES:
        if name in data:
            return data[name]
    lists = [name for name, _, c in el.props if c is not None]
    return data[lists[0]] if len(lists) == 1 else []


def read_ply(path: str | os.PathLike) -> PlyMesh:
    """Read vertices, ``face`` polygons and ``tristrips`` of a PLY file (ASCII, binary little-
    or big-endian; lists of any length). Other elements are read past and only counted.

    Returns:
        :class:`PlyMesh` (faces may be empty: the caller names the reason).

    Raises:
        MeshError: not a PLY file, malformed header, truncated body, no x/y/z properties.
    """
    with open(path, "rb") as fh:
        fmt, elements = _ply_header(fh)
        body = fh.read()
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MeshError(f"unknown PLY format {fmt!r}")
    tokens = body.split() if fmt == "ascii" else []
    order = ">" if fmt == "binary_big_endian" else "<"
    pos, data = 0, {}
    for el in elements:
        if fmt == "ascii":
            data[el.name], pos = _ply_rows_ascii(el, tokens, pos)
        else:
            data[el.name], pos = _ply_rows_binary(el, body, pos, order)
    by_name = {el.name: el for el in elements}
    vert = data.get("vertex", {})
    if by_name.get("vertex") and by_name["vertex"].count and not all(k in vert for k in "xyz"):
        raise MeshError("PLY 'vertex' element has no x, y, z properties")
    v = (np.stack([np.asarray(vert[k], np.float64) for k in "xyz"], axis=1) if "x" in vert
         else np.zeros((0, 3)))
    faces = [fan_triangles(_index_lists(data["face"], by_name["face"]))] if "face" in data else []
    if "tristrips" in data:
        faces.append(strip_triangles(_index_lists(data["tristrips"], by_name["tristrips"])))
    f = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    return PlyMesh(v, f.astype(np.int64), {el.name: el.count for el in elements})


# ----------------------------------------------------------------------------------------
# OBJ face indices

_SEPARATOR = np.zeros(256, bool)  # bytes that end a face index (lookup table)
_SEPARATOR[list(b" \t/\r\n#")] = True
_OBJ_KINDS = (b"v", b"vt", b"vn")  # the components of a face corner 'v/vt/vn'
_OBJ_KIND_NAMES = ("vertex", "texture coordinate", "vertex normal")


def _absolute_corner(corner: bytes, seen: dict[bytes, int], lineno: int) -> bytes:
    parts = corner.split(b"/")
    for j, part in enumerate(parts[:3]):
        if not part:
            continue
        try:
            k = int(part)
        except ValueError:
            text = corner.decode("ascii", "replace")
            raise MeshError(f"OBJ line {lineno}: malformed face index {text!r}") from None
        n = seen[_OBJ_KINDS[j]]
        if k == 0:
            raise MeshError(f"OBJ line {lineno}: face index 0 (OBJ indices count from 1)")
        if k < 0:
            if n + k < 0:
                raise MeshError(f"OBJ line {lineno}: relative index {k} refers before the first "
                                f"{_OBJ_KIND_NAMES[j]} ({n} defined above it)")
            parts[j] = str(n + k + 1).encode()
    return b"/".join(parts)


def _obj_faces_need_rewrite(data: bytes) -> bool:
    """Whether an ``f`` statement holds a ``-`` or an index 0 (vectorised: a regex over a
    large file costs seconds, this a fraction of one)."""
    a = np.frombuffer(data + b"\n\n", np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(a[:-2] == ord("\n")) + 1))
    is_face = (a[starts] == ord("f")) & ((a[starts + 1] == ord(" ")) | (a[starts + 1] == 9))
    if not is_face.any():
        return False
    zero = np.flatnonzero(a[1:-1] == ord("0")) + 1  # padded: both neighbours exist
    zero = zero[_SEPARATOR[a[zero - 1]] & _SEPARATOR[a[zero + 1]]]
    suspects = np.concatenate((np.flatnonzero(a == ord("-")), zero))
    return bool(is_face[np.searchsorted(starts, suspects, side="right") - 1].any())


def obj_absolute_indices(data: bytes) -> bytes | None:
    """OBJ text with every relative (negative) face index made absolute (pure).

    A relative index ``-k`` names the k-th last vertex (texture coordinate, normal) defined
    *above* the face statement (the OBJ specification); trimesh resolves it against the whole
    file instead, which changes the triangles of every body but the last.

    Args:
        data: the file's bytes.

    Returns:
        The rewritten bytes, or None when no ``f`` statement has a relative or zero index (the
        file is then read as it is).

    Raises:
        MeshError: an index 0, a relative index before the first element, a malformed index.
    """
    if not _obj_faces_need_rewrite(data):
        return None
    seen = dict.fromkeys(_OBJ_KINDS, 0)
    out = []
    for lineno, line in enumerate(data.splitlines(keepends=True), 1):
        words = line.split(b"#", 1)[0].split()
        if words and words[0] in seen:
            seen[words[0]] += 1
        elif words[:1] == [b"f"]:
            ending = line[len(line.rstrip(b"\r\n")):]
            line = b" ".join([b"f"] + [_absolute_corner(c, seen, lineno) for c in words[1:]])
            line += ending
        out.append(line)
    return b"".join(out)


def off_without_comments(data: bytes) -> bytes | None:
    """OFF text with every ``#`` comment cut off its line (pure), or None when it has none.

    trimesh's comment stripping repeats the text between the first line and the first
    comment, so a comment below the second line shifts every later row (faces read from
    vertex rows: no faces, or wrong ones); a comment-free text is read as written.
    """
    if b"#" not in data:
        return None
    return b"\n".join(ln.split(b"#", 1)[0] for ln in data.splitlines())


# ----------------------------------------------------------------------------------------
# truncated text files: fewer data lines than the header declares


def _data_lines(lines: list[bytes]) -> int:
    """Lines holding something other than whitespace and ``#`` comments."""
    return sum(1 for ln in lines if ln.split(b"#", 1)[0].strip())


def _off_truncation(data: bytes) -> str | None:
    """OFF: the counts line (on the magic line, glued or not, or the next data line) declares
    ``V F``; the V vertex and F face lines must follow (one per line, as trimesh reads them)."""
    lines = data.splitlines()
    i = next((k for k, ln in enumerate(lines) if ln.split(b"#", 1)[0].strip()), None)
    if i is None:
        return None
    first = lines[i].split(b"#", 1)[0].strip()
    magic = first.split()[0]
    if not magic.upper().startswith((b"OFF", b"COFF", b"NOFF", b"CNOFF", b"STOFF")):
        return None  # nOFF, 4OFF and friends: left to the loader
    rest = first[first.upper().index(b"OFF") + 3:].split()
    if not rest:
        i = next((k for k in range(i + 1, len(lines))
                  if lines[k].split(b"#", 1)[0].strip()), None)
        if i is None:
            return None
        rest = lines[i].split(b"#", 1)[0].split()
    try:
        n_v, n_f = int(rest[0]), int(rest[1])
    except (IndexError, ValueError):
        return None  # the loader names a malformed counts line
    have = _data_lines(lines[i + 1:])
    if have < n_v + n_f:
        return (f"truncated OFF: the header declares {n_v} vertices and {n_f} faces "
                f"({n_v + n_f} lines) but {have} data lines follow it")
    return None


def _ascii_ply_truncation(path: str | os.PathLike) -> str | None:
    """ASCII PLY: one line per element row; fewer lines than the declared rows is confirmed by
    :func:`read_ply` (which reads tokens, not lines) before it is called a truncation."""
    with open(path, "rb") as fh:
        try:
            fmt, elements = _ply_header(fh)
        except MeshError:
            return None  # the loader names a malformed header
        if fmt != "ascii":
            return None  # binary: trimesh and read_ply check the length
        have = _data_lines(fh.read().split(b"\n"))
    if have >= sum(el.count for el in elements):
        return None
    try:
        read_ply(path)
    except MeshError as e:
        return str(e)
    return None


def truncation_reason(path: str | os.PathLike) -> str | None:
    """Why a text mesh file (OFF, ASCII PLY) holds fewer rows than its header declares, or
    None. Loaders read such a file as a partial mesh without complaint."""
    suffix = os.path.splitext(str(path))[1].lower()
    try:
        if suffix == ".off":
            with open(path, "rb") as fh:
                return _off_truncation(fh.read())
        if suffix == ".ply":
            return _ascii_ply_truncation(path)
    except OSError as e:
        return f"cannot read file ({type(e).__name__}: {e})"
    return None


# ----------------------------------------------------------------------------------------
# why a file has no triangles


STL_HEADER_BYTES = 84   # 80-byte header + uint32 triangle count
STL_FACET_BYTES = 50    # normal, 3 vertices (12 float32) + uint16 attribute


def _stl_reason(path: str | os.PathLike, size: int) -> str | None:
    """Why an STL file gave no triangles (header-only, truncated binary), or None."""
    with open(path, "rb") as fh:
        head = fh.read(STL_HEADER_BYTES)
        rest = fh.read(4096)
    is_text = head.lstrip().lower().startswith(b"solid") and b"\0" not in head + rest
    if is_text:
        with open(path, "rb") as fh:
            text = fh.read().lower()
        if b"facet" not in text:
            return "no triangle faces: an ASCII STL with no facets (a header-only file)"
        return None
    if size < STL_HEADER_BYTES:
        return f"mesh has no vertices: a {size}-byte file is shorter than a binary STL header"
    (n,) = struct.unpack("<I", head[80:84])
    need = STL_HEADER_BYTES + STL_FACET_BYTES * n
    if n == 0:
        return "no triangle faces: the binary STL declares 0 triangles (a header-only file)"
    if size != need:
        return (f"binary STL declares {n} triangles ({need} bytes) but the file has {size} "
                "bytes (truncated, or not an STL file)")
    return None


def _off_counts(path: str | os.PathLike) -> dict[str, int]:
    """``{'vertex': n, 'face': m}`` from an OFF header (counts on the magic line or the next
    non-comment line); empty when unreadable."""
    words: list[str] = []
    with open(path, "rb") as fh:
        for raw in fh:
            words += raw.split(b"#")[0].decode("ascii", "replace").split()
            if len(words) >= 4 or (words and not words[0].upper().endswith("OFF")
                                   and len(words) >= 3):
                break
    if words and words[0].upper().endswith("OFF"):
        words = words[1:]
    try:
        return {"vertex": int(words[0]), "face": int(words[1])}
    except (IndexError, ValueError):
        return {}


def declared_counts(path: str | os.PathLike) -> dict[str, int]:
    """Element counts a mesh file declares: PLY header ``element`` lines, OFF header counts,
    OBJ ``v``/``f``/``l``/``p`` statements; empty for other formats or unreadable text."""
    suffix = os.path.splitext(str(path))[1].lower()
    counts: dict[str, int] = {}
    try:
        if suffix == ".off":
            return _off_counts(path)
        with open(path, "rb") as fh:
            if suffix == ".ply":
                for raw in fh:
                    words = raw.decode("ascii", "replace").split()
                    if words[:1] == ["end_header"]:
                        break
                    if len(words) == 3 and words[0] == "element" and words[2].isdigit():
                        counts[words[1]] = int(words[2])
            elif suffix == ".obj":
                for raw in fh:
                    word = raw.split(maxsplit=1)[:1]
                    if word in ([b"v"], [b"f"], [b"l"], [b"p"]):
                        key = word[0].decode()
                        counts[key] = counts.get(key, 0) + 1
    except OSError:
        return {}
    return counts


def faceless_reason(path: str | os.PathLike, n_loaded: int = 0) -> str:
    """Why a mesh file gave no triangle faces, in words (empty file, header only, truncated
    binary STL, point cloud, lines / strips only, unparsable); ``n_loaded``: the vertices the
    loader found."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "mesh has no vertices: the file is empty (0 bytes)"
        if str(path).lower().endswith(".stl"):
            why = _stl_reason(path, size)
            if why:
                return why
        counts = declared_counts(path)
    except OSError as e:
        return f"cannot read file ({type(e).__name__}: {e})"
    n_v = counts.get("vertex", counts.get("v", 0)) or int(n_loaded)
    others = {k: n for k, n in counts.items() if k not in ("vertex", "v", "face", "f") and n}
    if not n_v:
        if counts and not any(counts.values()):
            return "mesh has no vertices: the header declares 0 vertices (a header-only file)"
        kind = os.path.splitext(str(path))[1] or "mesh"
        return ("mesh has no vertices: nothing could be parsed from the file "
                f"({size} bytes; corrupt, or not a {kind} file)")
    if others:
        listed = ", ".join(f"{n} '{k}'" for k, n in sorted(others.items()))
        return f"no triangle faces: {n_v} vertices and only other elements ({listed})"
    return f"no triangle faces: {n_v} vertices only (a point cloud)"


__all__ = ["MeshError", "PlyMesh", "declared_counts", "faceless_reason", "fan_triangles",
           "obj_absolute_indices", "off_without_comments", "read_ply", "strip_triangles",
           "truncation_reason"]
