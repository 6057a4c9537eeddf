"""A GGUF file's header, read in milliseconds: magic, version, metadata, tensor table, and whether the file
holds every tensor its table names.

gguf's own `GGUFReader` builds a numpy view per metadata element and takes seconds on a 49k-token vocabulary;
this reads the same layout with `struct` (skipping array contents) and takes the format's constants (value
types, tensor block sizes, supported versions) from the gguf package, so the two agree on what a valid file is.
Layout: magic `GGUF`, uint32 version, uint64 tensor count, uint64 metadata count, the metadata (key string,
uint32 type, value), the tensor infos (name, uint32 dims, uint64 per dim, uint32 type, uint64 offset), then the
tensor data from the next multiple of `general.alignment` (default 32). Strings are uint64 length + UTF-8.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
MAX_COUNT = 1 << 24  # more tensors or metadata entries than any real model: a corrupt header
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class Corrupt(ValueError):
    """The file is not a whole GGUF: the message says what is wrong, in words."""


@dataclass
class Header:
    """What a GGUF header says: scalar metadata, arrays by length, the tensor table and where data starts."""

    version: int
    metadata: dict[str, Any] = field(default_factory=dict)  # scalars and strings; arrays as ('array', length)
    tensors: list[tuple[str, tuple[int, ...], int, int]] = field(default_factory=list)  # name, dims, type, offset
    data_start: int = 0


class _Cursor:
    """Little-endian reads from a buffer that say 'truncated' instead of raising struct errors."""

    def __init__(self, buf: Any) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise Corrupt(f"the header is cut off at byte {len(self.buf)} (an interrupted download?)")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise Corrupt(f"the header is cut off at byte {len(self.buf)} (an interrupted download?)")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in SCALARS:
            return self.take(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if count > 1 << 32:
                raise Corrupt(f"an array claims {count} elements")
            if item in SCALARS:  # fixed-size items: skip them in one step
                self.pos += struct.calcsize(SCALARS[item]) * count
            else:
                for _ in range(count):
                    self.value(item)
            return ("array", count)
        raise Corrupt(f"unknown metadata value type {kind}")


def read_header(path: Path) -> Header:
    """The header of the GGUF file at `path`; Corrupt (in words) for anything a loader would choke on."""
    from gguf.gguf_reader import READER_SUPPORTED_VERSIONS

    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != MAGIC:
            raise Corrupt(f"does not start with the GGUF magic (starts with {bytes(buf[:4])!r})")
        cur = _Cursor(buf)
        cur.pos = 4
        version = cur.take("<I")
        if version not in READER_SUPPORTED_VERSIONS:
            raise Corrupt(f"is GGUF version {version}; the installed gguf reads versions "
                          f"{', '.join(map(str, READER_SUPPORTED_VERSIONS))}")
        n_tensors, n_meta = cur.take("<Q"), cur.take("<Q")
        if n_tensors > MAX_COUNT or n_meta > MAX_COUNT:
            raise Corrupt(f"its header claims {n_tensors} tensors and {n_meta} metadata entries")
        header = Header(version)
        for _ in range(n_meta):
            key = cur.string()
            header.metadata[key] = cur.value(cur.take("<I"))
        for _ in range(n_tensors):
            name, n_dims = cur.string(), cur.take("<I")
            if n_dims > 8:
                raise Corrupt(f"tensor {name!r} claims {n_dims} dimensions")
            dims = tuple(cur.take("<Q") for _ in range(n_dims))
            header.tensors.append((name, dims, cur.take("<I"), cur.take("<Q")))
        align = header.metadata.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise Corrupt(f"general.alignment={align!r} is not a power of two")
        header.data_start = -(-cur.pos // align) * align
        _check_data(header, len(buf))
    return header


def _check_data(header: Header, size: int) -> None:
    """Every tensor's type is known and its bytes lie inside the file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    end = header.data_start
    for name, dims, kind, offset in header.tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise Corrupt(f"tensor {name!r} has tensor type {kind}, unknown to the installed gguf "
                          "(a file from a newer llama.cpp?)") from None
        count = 1
        for d in dims:
            count *= d
        end = max(end, header.data_start + offset + count // block * type_size)
    if end > size:
        raise Corrupt(f"its tensors need {end:,} bytes, the file has {size:,} (cut off: an interrupted download?)")
