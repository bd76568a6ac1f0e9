"""Parse and check a safetensors header without trusting it, and without reading tensor data.

A safetensors file is ``<u64 little-endian header length N> <N bytes of JSON header> <data>``.
The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the start of the data section) and may hold a ``__metadata__`` object of
strings. Files come from users, so every field is checked before anything relies on it: the
length is bounded, the offsets tile the data section exactly, and each tensor's byte span
matches its dtype and shape.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidAdapter

# The same bound the safetensors library enforces; a real header is a few KB to a few MB.
MAX_HEADER_BYTES = 100_000_000
LENGTH_PREFIX_BYTES = 8
# A LoRA of every expert of a large mixture-of-experts model has about 100,000 tensors.
MAX_TENSORS = 250_000

# Bits per element of every dtype the safetensors format defines.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "U16": 16, "I16": 16, "U32": 32, "I32": 32, "U64": 64, "I64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "C64": 64,
}
# The floating-point dtypes, with the names torch (and the manifest) give them.
FLOAT_DTYPE_NAMES = {
    "F4": "float4_e2m1", "F6_E2M3": "float6_e2m3", "F6_E3M2": "float6_e3m2",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it; ``offsets`` are relative to the data section."""

    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.offsets[1] - self.offsets[0]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header: the tensors by name and the ``__metadata__`` strings."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    header_bytes: int
    data_bytes: int


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Read and check the header of the safetensors file at ``path``; tensor data is not read.

    Raises ``InvalidAdapter`` (one line naming the file) when the file is missing or too short,
    the header length is absurd or past the end of the file, the header is not a JSON object,
    an entry lacks or misstates dtype / shape / data_offsets, the dtype is unknown, or the
    offsets do not cover the data section exactly once.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            prefix = f.read(LENGTH_PREFIX_BYTES)
            if len(prefix) < LENGTH_PREFIX_BYTES:
                raise _invalid(path, f"file is {file_size} bytes, too short to be safetensors")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES:
                raise _invalid(path, f"header length {header_len} is absurd (limit {MAX_HEADER_BYTES} bytes)")
            if header_len > file_size - LENGTH_PREFIX_BYTES:
                raise _invalid(path, f"header length {header_len} runs past the end of the {file_size}-byte file "
                                     "(truncated or not safetensors)")
            raw = f.read(header_len)
    except FileNotFoundError:
        raise _invalid(path, "file not found") from None
    except IsADirectoryError:
        raise _invalid(path, "is a directory, not a file") from None
    except OSError as exc:
        raise _invalid(path, f"cannot be read ({exc.strerror or exc})") from None
    data_bytes = file_size - LENGTH_PREFIX_BYTES - header_len
    header = _parse_json(path, raw)
    metadata = _check_metadata(path, header.pop("__metadata__", {}))
    if len(header) > MAX_TENSORS:
        raise _invalid(path, f"header lists {len(header):,} tensors (at most {MAX_TENSORS:,})")
    tensors = {name: _check_entry(path, name, entry) for name, entry in header.items()}
    _check_layout(path, tensors, data_bytes)
    return SafetensorsHeader(tensors=tensors, metadata=metadata, header_bytes=header_len, data_bytes=data_bytes)


def _invalid(path: Path, problem: str) -> InvalidAdapter:
    return InvalidAdapter(f"{path}: {problem}", path=str(path))


def _parse_json(path: Path, raw: bytes) -> dict:
    def no_duplicates(pairs):
        # json keeps the last of duplicate keys silently; two entries for one name is corruption.
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise _invalid(path, f"header names tensor {_short(duplicate)} twice")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: JSONDecodeError, NaN, a 5,000-digit int
        raise _invalid(path, f"header is not valid JSON ({_first_line(exc)}); not a safetensors file?") from None
    except RecursionError:
        raise _invalid(path, "header is nested too deeply; not a safetensors file?") from None
    if not isinstance(header, dict):
        raise _invalid(path, f"header is a JSON {type(header).__name__}, not an object")
    return header


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _check_metadata(path: Path, metadata) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(path, "__metadata__ must be an object of strings")
    return metadata


def _is_count(value) -> bool:
    # bool is an int subclass; `true` is not a valid dimension or offset.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(path: Path, name: str, entry) -> TensorEntry:
    if not isinstance(entry, dict):
        raise _invalid(path, f"tensor {_short(name)}: header entry is not an object")
    missing = [field for field in ("dtype", "shape", "data_offsets") if field not in entry]
    if missing:
        raise _invalid(path, f"tensor {_short(name)}: header entry lacks {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:  # a list or object is unhashable
        raise _invalid(path, f"tensor {_short(name)}: unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _invalid(path, f"tensor {_short(name)}: shape {_short(shape)} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise _invalid(path, f"tensor {_short(name)}: data_offsets {_short(offsets)} is not [begin, end] with "
                             "begin <= end")
    tensor = TensorEntry(dtype=dtype, shape=tuple(shape), offsets=(offsets[0], offsets[1]))
    expected_bits = tensor.numel * DTYPE_BITS[dtype]
    if expected_bits != tensor.nbytes * 8:
        if expected_bits.bit_length() > 200:
            needs = "more than 10^60"  # a shape this large cannot be printed (or held) anyway
        else:
            needs = f"{expected_bits // 8}" if expected_bits % 8 == 0 else f"{expected_bits / 8:g}"
        raise _invalid(path, f"tensor {_short(name)}: {dtype} {_short(list(shape))} needs {needs} bytes "
                             f"but data_offsets span {tensor.nbytes}")
    return tensor


def _short(value) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # ValueError: an int too long to print
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_layout(path: Path, tensors: dict[str, TensorEntry], data_bytes: int) -> None:
    """The tensors' byte ranges must tile the data section: no gap, no overlap, nothing after."""
    position = 0
    for name, tensor in sorted(tensors.items(), key=lambda item: item[1].offsets):
        begin, end = tensor.offsets
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise _invalid(path, f"tensor {_short(name)}: data_offsets {list(tensor.offsets)} {problem} "
                                 f"(expected it to begin at {position})")
        position = end
    if position > data_bytes:
        raise _invalid(path, f"tensors need {position} data bytes but the file holds {data_bytes} "
                             "(truncated file?)")
    if position < data_bytes:
        raise _invalid(path, f"{data_bytes - position} unaccounted bytes after the last tensor")
