"""Read single arrays out of an ``.npz`` without unpacking the rest (the loader's fast path).

An ``.npz`` is a zip archive of ``.npy`` members, stored or deflated. ``np.load`` reads a member
through :mod:`zipfile`, which inflates it in 4 KiB steps from Python; here a member's bytes are
read with one ``pread`` and inflated in one call (ISA-L's inflate and CRC-32 when the ``isal``
package is installed: same results as zlib, ~1.6x and ~5x faster), the zip CRC-32 is checked, and the ``.npy``
header is parsed once per distinct header text. The zip directory is parsed per call (about
20 entries, a few tens of microseconds), so nothing per file stays in memory.

Everything raises :class:`NpzFormatError` with the problem in words; the caller adds the path
(:class:`nepa3d.data.cache.CacheError`). Archives this parser does not handle (ZIP64 end
records, multi-disk) fall back to :mod:`zipfile` for the directory.
"""

from __future__ import annotations

import ast
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

try:  # ISA-L: the same inflate output and CRC-32 values as zlib, 1.6x / 5x faster
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - depends on the environment
    _inflate_lib = zlib
_crc32 = _inflate_lib.crc32

INFLATE = "isal" if _inflate_lib is not zlib else "zlib"

_EOCD = struct.Struct("<IHHHHIIH")            # end of central directory, 22 bytes
_CDIR = struct.Struct("<IHHHHHHIIIHHHHHII")   # central directory entry, 46 bytes
_LOCAL = struct.Struct("<IHHHHHIIIHH")        # local file header, 30 bytes
_EOCD_SIG, _CDIR_SIG, _LOCAL_SIG = 0x06054B50, 0x02014B50, 0x04034B50
_STORED, _DEFLATED = 0, 8
_NPY_MAGIC = b"\x93NUMPY"
_LOCAL_SLACK = 64       # local extra fields longer than this cost a second read
_HEADER_PREFIX = 4096   # compressed bytes inflated to reach a member's .npy header


class NpzFormatError(ValueError):
    """A zip / npy structure this reader cannot use (the problem in words)."""


@dataclass(frozen=True)
class Member:
    """One zip member: where its bytes are and how they are packed."""

    name: str
    offset: int        # local header offset
    csize: int         # compressed size
    size: int          # uncompressed size
    method: int        # 0 stored, 8 deflated
    crc: int
    flags: int


@dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    data_offset: int   # bytes before the array data within the member


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise NpzFormatError(f"truncated: wanted {n} bytes at offset {offset}, got {len(data)}")
    return data


def _zip64_fields(extra: bytes, want: list[str]) -> dict[str, int]:
    """Values of the ZIP64 extra field (id 1) for the 32-bit fields that overflowed."""
    i = 0
    while i + 4 <= len(extra):
        hid, ln = struct.unpack_from("<HH", extra, i)
        if hid == 1:
            vals = struct.unpack_from("<" + "Q" * len(want), extra, i + 4) if len(want) * 8 <= ln else None
            if vals is None:
                break
            return dict(zip(want, vals))
        i += 4 + ln
    raise NpzFormatError("ZIP64 sizes announced but no ZIP64 extra field")


def read_directory(fd: int, file_size: int) -> dict[str, Member]:
    """Members of the archive open as ``fd`` (``file_size`` bytes), by name."""
    if file_size < _EOCD.size:
        raise NpzFormatError(f"not a zip archive ({file_size} bytes)")
    tail = _pread_exact(fd, _EOCD.size, file_size - _EOCD.size)
    sig, disk, cd_disk, n_disk, n, cd_size, cd_off, comment = _EOCD.unpack(tail)
    if sig != _EOCD_SIG or comment or disk or cd_disk or n != n_disk or 0xFFFF in (n,) \
            or 0xFFFFFFFF in (cd_size, cd_off):
        return _directory_by_zipfile(fd)
    if cd_off + cd_size > file_size - _EOCD.size:
        raise NpzFormatError("zip directory points past the end of the file (truncated?)")
    cd = _pread_exact(fd, cd_size, cd_off)
    out: dict[str, Member] = {}
    pos = 0
    for _ in range(n):
        if pos + _CDIR.size > len(cd):
            raise NpzFormatError("zip directory is cut short")
        (sig, _vm, _vn, flags, method, _t, _d, crc, csize, size, nlen, xlen, clen,
         _disk, _ia, _ea, offset) = _CDIR.unpack_from(cd, pos)
        if sig != _CDIR_SIG:
            raise NpzFormatError("zip directory entry has a bad signature")
        name = cd[pos + _CDIR.size: pos + _CDIR.size + nlen].decode("utf-8", "replace")
        extra = cd[pos + _CDIR.size + nlen: pos + _CDIR.size + nlen + xlen]
        want = [k for k, v in (("size", size), ("csize", csize), ("offset", offset)) if v == 0xFFFFFFFF]
        if want:
            z = _zip64_fields(extra, want)
            size, csize, offset = z.get("size", size), z.get("csize", csize), z.get("offset", offset)
        out[name] = Member(name, offset, csize, size, method, crc, flags)
        pos += _CDIR.size + nlen + xlen + clen
    return out


def _directory_by_zipfile(fd: int) -> dict[str, Member]:
    try:
        with os.fdopen(os.dup(fd), "rb") as f, zipfile.ZipFile(f) as zf:
            return {i.filename: Member(i.filename, i.header_offset, i.compress_size, i.file_size,
                                       i.compress_type, i.CRC, i.flag_bits)
                    for i in zf.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise NpzFormatError(f"not a readable zip archive ({type(e).__name__}: {e})") from e


def _member_span(fd: int, m: Member, extra: int) -> tuple[bytes, int]:
    """``(bytes from the local header on, offset of the data in them)``."""
    if m.flags & 1:
        raise NpzFormatError(f"member {m.name} is encrypted")
    want = _LOCAL.size + len(m.name.encode()) + _LOCAL_SLACK + extra
    buf = os.pread(fd, want, m.offset)
    if len(buf) < _LOCAL.size:
        raise NpzFormatError(f"member {m.name}: local header cut short (truncated file?)")
    sig, *_, nlen, xlen = _LOCAL.unpack_from(buf, 0)
    if sig != _LOCAL_SIG:
        raise NpzFormatError(f"member {m.name}: bad local header signature")
    start = _LOCAL.size + nlen + xlen
    if start + extra > len(buf):
        buf = _pread_exact(fd, start + extra, m.offset)
    return buf, start


def _inflate(data, size: int | None, name: str, partial: int | None = None) -> bytes:
    try:
        if partial is not None:
            return zlib.decompressobj(-15).decompress(data, partial)
        return _inflate_lib.decompress(data, -15, size or 16384)
    except zlib.error as e:  # isal raises zlib.error too
        raise NpzFormatError(f"member {name}: corrupt deflate stream ({e})") from e


def member_bytes(fd: int, m: Member) -> bytes:
    """The uncompressed bytes of member ``m`` (CRC-checked)."""
    buf, start = _member_span(fd, m, m.csize)
    raw = memoryview(buf)[start: start + m.csize]
    if len(raw) != m.csize:
        raise NpzFormatError(f"member {m.name}: data cut short (truncated file?)")
    if m.method == _STORED:
        out = bytes(raw)
    elif m.method == _DEFLATED:
        out = _inflate(raw, m.size, m.name)
    else:
        raise NpzFormatError(f"member {m.name}: unsupported compression method {m.method}")
    if len(out) != m.size:
        raise NpzFormatError(f"member {m.name}: {len(out)} bytes inflated, directory says {m.size}")
    if _crc32(out) != m.crc:
        raise NpzFormatError(f"member {m.name}: CRC-32 mismatch (corrupt data)")
    return out


def member_prefix(fd: int, m: Member, n: int = 512) -> bytes:
    """The first ``n`` uncompressed bytes of member ``m`` (no CRC check: a header peek)."""
    take = min(m.csize, _HEADER_PREFIX if m.method == _DEFLATED else n)
    buf, start = _member_span(fd, m, take)
    raw = buf[start: start + take]
    if m.method == _STORED:
        return raw[:n]
    if m.method == _DEFLATED:
        return _inflate(raw, None, m.name, partial=n)
    raise NpzFormatError(f"member {m.name}: unsupported compression method {m.method}")


_HEADERS: dict[bytes, tuple[np.dtype, tuple, bool]] = {}


def parse_npy_header(head: bytes, name: str) -> NpyHeader:
    """The ``.npy`` header at the start of ``head`` (memoised by its text)."""
    if head[:6] != _NPY_MAGIC or len(head) < 10:
        raise NpzFormatError(f"member {name}: not an .npy array")
    major = head[6]
    if major == 1:
        hlen, start = struct.unpack_from("<H", head, 8)[0], 10
    elif major in (2, 3):
        if len(head) < 12:
            raise NpzFormatError(f"member {name}: .npy header cut short")
        hlen, start = struct.unpack_from("<I", head, 8)[0], 12
    else:
        raise NpzFormatError(f"member {name}: .npy format version {major} is not supported")
    text = bytes(head[start: start + hlen])
    if len(text) != hlen:
        raise NpzFormatError(f"member {name}: .npy header cut short")
    parsed = _HEADERS.get(text)
    if parsed is None:
        try:
            d = ast.literal_eval(text.decode("latin1" if major < 3 else "utf-8"))
            dtype = np.dtype(np.lib.format.descr_to_dtype(d["descr"]))
            shape = tuple(int(s) for s in d["shape"])
            fortran = bool(d["fortran_order"])
        except (ValueError, SyntaxError, KeyError, TypeError) as e:
            raise NpzFormatError(f"member {name}: unreadable .npy header ({e})") from e
        if dtype.hasobject:
            raise NpzFormatError(f"member {name}: object arrays are not allowed")
        parsed = (dtype, shape, fortran)
        if len(_HEADERS) < 4096:
            _HEADERS[text] = parsed
    dtype, shape, fortran = parsed
    return NpyHeader(dtype, shape, fortran, start + hlen)


def array_from_member(data: bytes, name: str) -> np.ndarray:
    """Decode a whole ``.npy`` member (read-only array on ``data``'s buffer)."""
    h = parse_npy_header(data[:512] if len(data) > 512 else data, name)
    if h.data_offset > 512:
        h = parse_npy_header(data, name)
    count = int(np.prod(h.shape, dtype=np.int64))
    if len(data) - h.data_offset != count * h.dtype.itemsize:
        raise NpzFormatError(f"member {name}: {len(data) - h.data_offset} data bytes for shape "
                             f"{h.shape} {h.dtype}")
    arr = np.frombuffer(data, dtype=h.dtype, count=count, offset=h.data_offset)
    if h.fortran:
        return arr.reshape(h.shape[::-1]).T
    return arr.reshape(h.shape)


def npy_name(key: str) -> str:
    return key + ".npy"


def array_names(members: Iterable[str]) -> list[str]:
    """Array keys of an npz (member names ending in ``.npy``, suffix removed)."""
    return [m[:-4] for m in members if m.endswith(".npy")]
