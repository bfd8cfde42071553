"""A reader for R `qs` files (the CRAN package qs, format 3; not its successor qs2).

Why it is hand-written: no PyPI package reads qs files (qs's author, 2024-11: "Currently it
is not possible", qsbase/qs2 issue 6), and the CRAN package is neither in Debian nor
reachable here. `rdata` and `pyreadr` read R's own serialisation (RDS/RData), which qs is
*not*: qs encodes vectors, lists and attributes in a compact format of its own and falls
back to R serialisation only for rare types (closures, environments, S4). Decompression is
the `zstandard` library's; this module only walks the object encoding, which is small.

The format (traversc/qs: `src/qs_common.h`, `src/qs_deserialize_common.h`), little-endian:

- header: the magic `0B 0E 0A 0C`, 4 zero bytes, then format version, hash flag,
  `algorithm << 4 | shuffle flags` (1 logical, 2 integer, 4 double, 8 complex) and
  endianness, one byte each; then a uint64, the number of compressed blocks;
- blocks: a uint32 compressed size and a zstd frame of at most 512 KiB once decompressed.
  The blocks' bytes, end to end, form one stream: qs never splits an object header across
  two blocks but does split vector data, so concatenating them is exact;
- with the hash flag, 4 trailing bytes (xxhash32 of the stream). They are not checked
  (xxhash is no dependency); a corrupt file fails zstd's frame decoding or the exact-length
  checks (every block and every stream byte consumed) instead;
- the stream holds one object: [attribute count] type header (type and length in 1, 2, 3,
  5 or 9 bytes), the payload, then each attribute as a name string and an object. Numeric,
  integer and logical payloads are byte-shuffled (Blosc: byte 0 of every element, then
  byte 1, ...) when the header says so; strings carry their own length/encoding header.

Only the zstd block algorithm (qs's default presets "high" and the `zstd` algorithm) is
read; lz4 and zstd_stream files, and the rare types, raise `QsError` with what was found.

Values come back as: NULL -> None; double -> float64 array; integer and logical -> int32
array (R's NA is `NA_INTEGER`, doubles' NA a NaN); character -> list of str, None for NA;
list -> list; raw -> bytes; anything with attributes -> `RObject(value, attributes)`.
`data_frame` turns a data.frame (or tibble) into named columns, expanding factors and
Dates.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NA_INTEGER", "QsError", "RObject", "data_frame", "read_qs"]

NA_INTEGER = -(2**31)  # R's NA for integer and logical vectors
_MAGIC = b"\x0b\x0e\x0a\x0c"
_BLOCK = 524288  # qs's BLOCKSIZE: the most a block decompresses to
_ZSTD = 0  # algorithm code of the zstd block mode

# One-byte type codes: groups of four with the length in 1, 2, 4 or 8 bytes after them.
_SIZED = {"list": 0x01, "numeric": 0x05, "integer": 0x09, "logical": 0x0D, "character": 0x11}
_LEN_FORMAT = ("<B", "<H", "<I", "<Q")
_HEADERS: dict[int, tuple[str, str]] = {
    code + i: (kind, _LEN_FORMAT[i]) for kind, code in _SIZED.items() for i in range(4)
}
_HEADERS |= {
    0x15: ("complex", "<I"), 0x16: ("complex", "<Q"),
    0x17: ("raw", "<I"), 0x18: ("raw", "<Q"),
    0x19: ("rserialized", "<I"), 0x1A: ("rserialized", "<Q"),
    0x1E: ("attributes", "<B"), 0x1F: ("attributes", "<I"),
}  # fmt: skip
# Codes whose top three bits name the type and whose low five bits are the length (< 32).
_SHORT = {0x20: "list", 0x40: "numeric", 0x60: "integer", 0x80: "logical",
          0xA0: "character", 0xE0: "attributes"}  # fmt: skip
_NULL, _EXTENSION, _SYMBOL = 0x00, 0x1C, 0x1D
_ENCODINGS = {0x00: "utf-8", 0x40: "utf-8", 0x80: "latin-1"}  # native, UTF-8, latin1
_NA_STRING = 0x0F


class QsError(ValueError):
    """The bytes are not a qs file this reader understands (says what was found, where)."""


@dataclass(frozen=True, slots=True)
class RObject:
    """An R value with attributes: `names`, `class`, `levels`, `row.names`, ..."""

    value: Any
    attributes: dict[str, Any]

    @property
    def r_class(self) -> list[str]:
        cls = self.attributes.get("class")
        return list(cls) if isinstance(cls, list) else []


def read_qs(source: str | Path | bytes) -> Any:
    """The object stored in a qs file (a path or the file's bytes).

    Cost: the file is decompressed whole (about 35 bytes in memory per byte of a 2 MB
    table file, 74 MB for the 1.67 M NCCI pairs), then walked once in Python: ~1 s a
    million strings."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    stream, shuffle = _decompress(data)
    reader = _Reader(stream, shuffle)
    try:
        obj = reader.object()
    except (IndexError, struct.error) as exc:
        raise QsError(f"truncated stream ({exc})") from exc
    if reader.pos != len(stream):
        raise QsError(f"the object ends at byte {reader.pos} of a {len(stream)}-byte stream")
    return obj


def data_frame(obj: Any) -> dict[str, Any]:
    """The columns of an R data.frame or tibble, by name, in order.

    Factors become lists of their level strings (None for NA), `Date` columns
    `datetime64[D]` arrays (NaT for NA); other columns are returned as read."""
    if not isinstance(obj, RObject) or "data.frame" not in obj.r_class:
        raise QsError(f"not a data.frame: {type(obj).__name__}")
    names = obj.attributes.get("names") or []
    if len(names) != len(obj.value):
        raise QsError("data.frame without a name for every column")
    columns = {name: _column(col) for name, col in zip(names, obj.value, strict=True)}
    lengths = {len(col) for col in columns.values()}
    if len(lengths) > 1:
        raise QsError(f"data.frame columns of different lengths: {sorted(lengths)}")
    return columns


def _column(col: Any) -> Any:
    if not isinstance(col, RObject):
        return col
    if "factor" in col.r_class:
        levels = col.attributes["levels"]
        return [None if code == NA_INTEGER else levels[code - 1] for code in col.value.tolist()]
    if "Date" in col.r_class:
        days = np.asarray(col.value, dtype=np.float64)
        out = np.full(days.shape, np.datetime64("NaT"), dtype="datetime64[D]")
        ok = ~np.isnan(days)
        out[ok] = days[ok].astype(np.int64).astype("datetime64[D]")
        return out
    return col.value


def _decompress(data: bytes) -> tuple[bytes, int]:
    """The concatenated stream of a qs file's blocks, and its shuffle flags."""
    if len(data) < 20 or data[:4] != _MAGIC:
        raise QsError("not a qs file (no 0B0E0A0C magic; qs2 files start with a different one)")
    version, has_hash, algo_shuffle, big_endian = data[8:12]
    algorithm, shuffle = algo_shuffle >> 4, algo_shuffle & 0x0F
    if version != 3 or big_endian or algorithm != _ZSTD:
        raise QsError(
            f"unsupported qs header: format {version}, algorithm {algorithm} "
            f"(only 0 = zstd blocks), big-endian {big_endian}"
        )
    (n_blocks,) = struct.unpack_from("<Q", data, 12)
    pos, parts = 20, []
    import zstandard  # the tables extra: only a rebuild from northstar reads qs files

    zstd = zstandard.ZstdDecompressor()
    for i in range(n_blocks):
        if pos + 4 > len(data):
            raise QsError(f"file ends in block {i} of {n_blocks}")
        (size,) = struct.unpack_from("<I", data, pos)
        try:
            parts.append(zstd.decompress(data[pos + 4 : pos + 4 + size], max_output_size=_BLOCK))
        except zstandard.ZstdError as exc:
            raise QsError(f"block {i} of {n_blocks}: {exc}") from exc
        pos += 4 + size
    if len(data) - pos != (4 if has_hash else 0):
        raise QsError(f"{len(data) - pos} unexpected bytes after the last block")
    return b"".join(parts), shuffle


class _Reader:
    """Walks the decompressed stream; `pos` is the next byte to read."""

    def __init__(self, stream: bytes, shuffle: int) -> None:
        self.buf = stream
        self.pos = 0
        self.shuffle = shuffle

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise QsError(f"truncated: {n} bytes wanted at {self.pos} of {len(self.buf)}")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def _unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def _header(self) -> tuple[str, int]:
        at = self.pos
        code = self.buf[at]
        self.pos += 1
        if code in _HEADERS:
            kind, fmt = _HEADERS[code]
            return kind, self._unpack(fmt)
        if code == _NULL:
            return "null", 0
        if code >= 0x20 and (code & 0xE0) in _SHORT:
            return _SHORT[code & 0xE0], code & 0x1F
        what = {_EXTENSION: "an S4/pairlist/language/closure/environment object",
                _SYMBOL: "a symbol"}.get(code, "an unknown type")  # fmt: skip
        raise QsError(f"unsupported qs object at byte {at}: header 0x{code:02X}, {what}")

    def _strings(self, n: int) -> list[str | None]:
        """`n` strings, each with its header: most of a table's bytes, so one tight loop.
        A slice past the end comes back short: `read_qs` then finds the stream overrun."""
        buf, pos, out = self.buf, self.pos, []
        append = out.append
        for _ in range(n):
            head = buf[pos]
            pos += 1
            if head & 0x20:  # length < 32 in the header byte itself
                size = head & 0x1F
            elif head & 0x1F == _NA_STRING:
                append(None)
                continue
            elif head & 0x1F in (1, 2, 3):
                fmt = _LEN_FORMAT[(head & 0x1F) - 1]
                (size,) = struct.unpack_from(fmt, buf, pos)
                pos += struct.calcsize(fmt)
            else:
                raise QsError(f"bad string header 0x{head:02X} at byte {pos - 1}")
            encoding = _ENCODINGS.get(head & 0xC0)
            if encoding is None:  # CE_BYTES: R keeps such strings undecoded
                raise QsError(f"string of encoding 'bytes' at byte {pos}")
            append(buf[pos : pos + size].decode(encoding))
            pos += size
        self.pos = pos
        return out

    def _vector(self, n: int, width: int, dtype: str, flag: int) -> np.ndarray:
        raw = np.frombuffer(self._take(n * width), dtype=np.uint8)
        item = np.dtype(dtype).itemsize
        if self.shuffle & flag and raw.size >= 4:  # undo Blosc's byte shuffle
            raw = raw.reshape(item, -1).T
        return np.ascontiguousarray(raw).view(dtype).reshape(-1)

    def object(self) -> Any:
        kind, n = self._header()
        n_attributes = 0
        if kind == "attributes":
            n_attributes = n
            kind, n = self._header()
        value: Any
        if kind == "null":
            value = None
        elif kind == "list":
            value = [self.object() for _ in range(n)]
        elif kind == "character":
            value = self._strings(n)
        elif kind == "numeric":
            value = self._vector(n, 8, "<f8", 0x04)
        elif kind in ("integer", "logical"):
            value = self._vector(n, 4, "<i4", 0x02 if kind == "integer" else 0x01)
        elif kind == "complex":
            value = self._vector(n, 16, "<f8", 0x08).view("<c16")
        elif kind == "raw":
            value = self._take(n)
        else:  # "rserialized": R's own serialisation embedded; none in the tables read here
            raise QsError(f"R-serialised object at byte {self.pos} (a type qs does not encode)")
        if not n_attributes:
            return value
        attributes = {}
        for _ in range(n_attributes):
            (name,) = self._strings(1)
            attributes[name or ""] = self.object()
        return RObject(value, attributes)
