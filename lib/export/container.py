"""The edge-artifact container: magic header, format version, JSON manifest, raw byte blobs.

Layout (all integers little-endian)::

    offset 0   8 bytes   MAGIC  b"CUTEDGE\\x00"
    offset 8   4 bytes   format version (uint32)
    offset 12  8 bytes   manifest length M (uint64)
    offset 20  4 bytes   CRC-32 of the manifest bytes (uint32; version 2, not in version 1)
    offset 24  M bytes   manifest, UTF-8 JSON
    then               the blobs, back to back; the manifest gives each one's offset
                       (relative to the end of the manifest), length, codec and CRC-32

Reading never unpickles and never evaluates anything: the manifest is parsed with ``json`` and
blobs are decoded with ``numpy.frombuffer`` into a whitelist of numeric dtypes. Anything else
(wrong magic, other version, truncated file, bad checksum, a manifest that does not match its
JSON schema, :func:`check_manifest`) raises :class:`ArtifactFormatError` with a one-line
message naming the file and what was expected. With the manifest's checksum no single changed
bit anywhere in the file goes unnoticed. Version 1 files (no manifest checksum) are read too.
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
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_PREFIX = struct.Struct("<8sI")                  # magic, version
_LENGTHS = {1: struct.Struct("<Q"),              # manifest length
            2: struct.Struct("<QI")}             # manifest length, manifest CRC-32
HEADER_BYTES = _PREFIX.size + _LENGTHS[FORMAT_VERSION].size

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
    try:
        if name == "none":
            return payload
        if name == "zlib":
            return zlib.decompress(payload)
        if name == "lzma":
            return lzma.decompress(payload, format=lzma.FORMAT_XZ)
    except (zlib.error, lzma.LZMAError) as exc:
        raise ArtifactFormatError(f"{where}: cannot {name}-decompress: {exc}") from None
    raise ArtifactFormatError(f"{where}: unknown compression {name!r}; expected one of "
                              f"{list(COMPRESSIONS)}")


# The JSON schema of a blob entry; formats built on the container use it in theirs.
BLOB_SCHEMA = {
    "type": "object",
    "required": ["offset", "length", "raw_length", "compression", "crc32"],
    "properties": {"offset": {"type": "integer", "minimum": 0},
                   "length": {"type": "integer", "minimum": 0},
                   "raw_length": {"type": "integer", "minimum": 0},
                   "compression": {"enum": list(COMPRESSIONS)},
                   "crc32": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}},
}
# What every container manifest holds; each format adds its own schema (check_manifest).
CONTAINER_SCHEMA = {
    "type": "object",
    "required": ["format", "blob_bytes"],
    "properties": {"format": {"type": "string"}, "blob_bytes": {"type": "integer", "minimum": 0}},
}


def check_manifest(manifest: Any, schema: dict[str, Any], source: str) -> None:
    """Raise a one-line :class:`ArtifactFormatError` naming ``source`` and the first offending
    place (``tensors[3].mask``) unless ``manifest`` matches the JSON ``schema``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(manifest))
    if error is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = " ".join(error.message.split())
    if len(message) > 200:
        message = message[:197] + "..."
    raise ArtifactFormatError(f"{source}: the manifest does not match its format: "
                              f"{where.lstrip('.') or 'manifest'} {message}")


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
    """The whole file's bytes: header (with the manifest's CRC-32), manifest (with the blob
    section's length), blobs."""
    manifest = dict(manifest, blob_bytes=blobs.size)
    text = json.dumps(manifest, separators=(",", ":"), sort_keys=True,
                      allow_nan=False).encode("utf-8")
    return (_PREFIX.pack(MAGIC, FORMAT_VERSION)
            + _LENGTHS[FORMAT_VERSION].pack(len(text), zlib.crc32(text))
            + text + b"".join(blobs.chunks))


class ArtifactReader:
    """Parses and validates a container file; :meth:`blob` returns decoded blob bytes.

    Checked here: magic, version, lengths, the manifest's CRC-32 (version 2), its JSON and
    :data:`CONTAINER_SCHEMA`; each format checks its own schema on :attr:`manifest`.
    """

    def __init__(self, path: str | os.PathLike, data: bytes | None = None) -> None:
        self.path = Path(path)
        if data is None:   # ``data``: the file's bytes, already read (``path`` names them)
            if not self.path.is_file():
                raise FileNotFoundError(f"edge artifact {self.path} does not exist")
            data = self.path.read_bytes()
        if len(data) < _PREFIX.size:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated: {len(data)} bytes, expected at least "
                f"the {HEADER_BYTES}-byte header")
        magic, version = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise ArtifactFormatError(
                f"{self.path} is not a CUT edge artifact: first bytes {magic!r}, expected magic "
                f"{MAGIC!r} (pickled checkpoints are refused, never loaded)")
        if version not in READABLE_VERSIONS:
            raise ArtifactFormatError(
                f"edge artifact {self.path} has format version {version}, expected version "
                f"{FORMAT_VERSION} (or {', '.join(map(str, READABLE_VERSIONS[:-1]))}); "
                f"re-export it with this version of lib.export")
        lengths = _LENGTHS[version]
        start = _PREFIX.size + lengths.size
        if len(data) < start:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated: {len(data)} bytes, expected at least "
                f"the {start}-byte header")
        manifest_len, *crc = lengths.unpack_from(data, _PREFIX.size)
        end = start + manifest_len
        if len(data) < end:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated: {len(data)} bytes, expected a "
                f"{manifest_len}-byte manifest after the header")
        text = data[start:end]
        if crc and zlib.crc32(text) != crc[0]:
            raise ArtifactFormatError(f"edge artifact {self.path}: the manifest fails its CRC-32 "
                                      f"check (file corrupt)")
        try:
            self.manifest = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ArtifactFormatError(f"edge artifact {self.path} has a corrupt manifest: "
                                      f"{exc}") from None
        check_manifest(self.manifest, CONTAINER_SCHEMA, f"edge artifact {self.path}")
        blob_bytes = self.manifest["blob_bytes"]
        if len(data) != end + blob_bytes:
            raise ArtifactFormatError(
                f"edge artifact {self.path} is truncated or has trailing bytes: {len(data)} "
                f"bytes, expected {end + blob_bytes} (header + manifest + {blob_bytes} blob bytes)")
        self._blobs = memoryview(data)[end:]

    def blob(self, entry: dict[str, Any], where: str) -> bytes:
        """Decoded bytes of one blob, after checking its bounds and CRC-32 (each format's
        schema has already checked the entry's fields, :data:`BLOB_SCHEMA`)."""
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
