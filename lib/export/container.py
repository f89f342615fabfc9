"""The edge-artifact container: magic header, format version, JSON manifest, raw byte blobs.

Layout (all integers little-endian)::

    offset 0   8 bytes   MAGIC  b"CUTEDGE\\x00"
    offset 8   4 bytes   format version (uint32)
    offset 12  8 bytes   manifest length M (uint64)
    offset 20  M bytes   manifest, UTF-8 JSON
    then               the blobs, back to back; the manifest gives each one's offset
                       (relative to the end of the manifest), length, codec and CRC-32

Reading never unpickles and never evaluates anything: the manifest is parsed with ``json`` and
blobs are decoded with ``numpy.frombuffer`` into a whitelist of numeric dtypes. Anything else
(wrong magic, other version, truncated file, bad checksum) raises :class:`ArtifactFormatError`
with a one-line message naming the file and what was expected.
"""
from __future__ import annotations

import json
import lzma
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"CUTEDGE\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ")
HEADER_BYTES = _HEADER.size

# Only plain numeric dtypes may be decoded; "object" and friends can never appear.
NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                "int64": np.int64, "int32": np.int32, "uint8": np.uint8, "bool": np.bool_}
COMPRESSIONS = ("none", "zlib", "lzma")
_PROBE_BYTES = 1 << 20


class ArtifactFormatError(ValueError):
    """The file is not a readable edge artifact of this format version."""


def compress_best(data: bytes, compressions: tuple[str, ...] = ("none", "zlib")) -> tuple[str, bytes]:
    """Return ``(compression, payload)`` for the smallest of ``compressions``."""
    best = ("none", data)
    if len(data) > _PROBE_BYTES and compressions != ("none",):
        # Large blobs (dense float weights) rarely compress: test a sample before paying for it.
        sample = data[:_PROBE_BYTES]
        if len(zlib.compress(sample, 1)) > 0.95 * len(sample):
            return best
    for name in compressions:
        if name == "zlib":
            candidate = zlib.compress(data, 9)
        elif name == "lzma":
            candidate = lzma.compress(data, preset=6)
        else:
            continue
        if len(candidate) < len(best[1]):
            best = (name, candidate)
    return best


def decompress(name: str, payload: bytes, where: str) -> bytes:
    if name == "none":
        return payload
    if name == "zlib":
        return zlib.decompress(payload)
    if name == "lzma":
        return lzma.decompress(payload, format=lzma.FORMAT_XZ)
    raise ArtifactFormatError(f"{where}: unknown compression {name!r}; expected one of "
                              f"{list(COMPRESSIONS)}")


class BlobWriter:
    """Collects blobs in memory and records where each one will sit in the file."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, data: bytes, compressions: tuple[str, ...] = ("none", "zlib")) -> dict[str, Any]:
        """Store ``data`` (compressed if that is smaller) and return its manifest entry."""
        compression, payload = compress_best(data, compressions)
        entry = {"offset": self.size, "length": len(payload), "raw_length": len(data),
                 "compression": compression, "crc32": zlib.crc32(payload)}
        self.chunks.append(payload)
        self.size += len(payload)
        return entry


def encode_file(manifest: dict[str, Any], blobs: BlobWriter) -> bytes:
    """The whole file's bytes: header, manifest (with the blob section's length), blobs."""
    manifest = dict(manifest, blob_bytes=blobs.size)
    text = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(text)) + text + b"".join(blobs.chunks)


class ArtifactReader:
    """Parses and validates a container file; :meth:`blob` returns decoded blob bytes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"edge artifact {self.path} does not exist")
        data = self.path.read_bytes()
        if len(data) < HEADER_BYTES:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated: {len(data)} bytes, expected at least "
                f"the {HEADER_BYTES}-byte header")
        magic, version, manifest_len = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ArtifactFormatError(
                f"{self.path} is not a CUT edge artifact: first bytes {magic!r}, expected magic "
                f"{MAGIC!r} (pickled checkpoints are refused, never loaded)")
        if version != FORMAT_VERSION:
            raise ArtifactFormatError(
                f"edge artifact {self.path} has format version {version}, expected version "
                f"{FORMAT_VERSION}; re-export it with this version of lib.export")
        end = HEADER_BYTES + manifest_len
        if len(data) < end:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated: {len(data)} bytes, expected a "
                f"{manifest_len}-byte manifest after the header")
        try:
            self.manifest = json.loads(data[HEADER_BYTES:end].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactFormatError(f"edge artifact {self.path} has a corrupt manifest: "
                                      f"{exc}") from None
        blob_bytes = self.manifest.get("blob_bytes") if isinstance(self.manifest, dict) else None
        if not isinstance(blob_bytes, int):
            raise ArtifactFormatError(f"edge artifact {self.path}: manifest lacks 'blob_bytes'")
        if len(data) != end + blob_bytes:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated or has trailing bytes: {len(data)} "
                f"bytes, expected {end + blob_bytes} (header + manifest + {blob_bytes} blob bytes)")
        self._blobs = memoryview(data)[end:]

    def blob(self, entry: dict[str, Any], where: str) -> bytes:
        """Decoded bytes of one blob, after checking its bounds and CRC-32."""
        try:
            offset, length = int(entry["offset"]), int(entry["length"])
            raw_length, crc = int(entry["raw_length"]), int(entry["crc32"])
            compression = str(entry["compression"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} has a malformed blob "
                                      f"entry {entry!r}") from None
        if offset < 0 or length < 0 or offset + length > len(self._blobs):
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} points outside the "
                                      f"file (offset {offset}, length {length})")
        payload = bytes(self._blobs[offset:offset + length])
        if zlib.crc32(payload) != crc:
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} fails its CRC-32 "
                                      f"check (file corrupt)")
        data = decompress(compression, payload, f"edge artifact {self.path}: {where}")
        if len(data) != raw_length:
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} decodes to "
                                      f"{len(data)} bytes, expected {raw_length}")
        return data

    def array(self, entry: dict[str, Any], dtype: str, where: str) -> np.ndarray:
        """A blob decoded as a 1-D array of a whitelisted numeric ``dtype``."""
        if dtype not in NUMPY_DTYPES:
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} has dtype {dtype!r}, "
                                      f"expected one of {sorted(NUMPY_DTYPES)}")
        np_dtype = np.dtype(NUMPY_DTYPES[dtype]).newbyteorder("<")
        data = self.blob(entry, where)
        if len(data) % np_dtype.itemsize:
            raise ArtifactFormatError(f"edge artifact {self.path}: {where} has {len(data)} "
                                      f"bytes, not a whole number of {dtype} values")
        return np.frombuffer(data, dtype=np_dtype)
