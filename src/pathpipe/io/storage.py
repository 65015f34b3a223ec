"""Storage conventions: atomic writes, provenance, Zarr helpers.

* Every output is written to a temporary sibling path and renamed into place,
  so a killed job never leaves an output that looks complete.
* Every Zarr store carries ``attrs["pathpipe"]`` with its provenance (source
  file, size and checksum, parameters, pathpipe version) and a ``complete`` flag
  written last; :func:`open_store` refuses stores without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pathpipe.errors import StorageError

__all__ = [
    "SHARD_BYTES",
    "ShardWriter",
    "atomic_dir",
    "atomic_file",
    "file_checksum",
    "open_store",
    "provenance",
    "provenance_json",
    "shard_items",
    "slide_id_of",
    "source_record",
    "write_json",
    "write_parquet",
]

_CHUNK = 8 * 1024 * 1024
#: Uncompressed bytes of the items (tiles) of one shard file (at most; see :func:`shard_items`).
SHARD_BYTES = 16 * 2**20
#: Name of the codec of tiles kept as the slide's JPEG bytes (:mod:`pathpipe.io.jpeg_codec`).
_SOURCE_JPEG = "pathpipe.source_jpeg"


def slide_id_of(path: str | os.PathLike[str]) -> str:
    """The slide id of a per-slide output: its folder, as in ``results/{slide}/tiles.zarr``."""
    return Path(os.path.abspath(path)).parent.name


def file_checksum(path: str | os.PathLike[str], *, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 8 MiB blocks (bounded memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


def source_record(path: str | os.PathLike[str], *, checksum: bool = True) -> dict[str, Any]:
    """Identity of an input file: absolute path, size in bytes, checksum, mtime."""
    p = Path(path).resolve()
    st = p.stat()
    rec: dict[str, Any] = {"path": str(p), "size": st.st_size, "mtime": st.st_mtime}
    if checksum:
        rec["checksum"] = file_checksum(p)
    return rec


def provenance(*, stage: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The provenance record stored with every output."""
    from pathpipe import __version__

    rec = {
        "stage": stage,
        "pathpipe_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "host": platform.node(),
        "params": params,
    }
    rec.update(extra)
    return rec


def _tmp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` on success.

    On an exception the temporary directory is removed and ``final`` is left as
    it was. An existing ``final`` is replaced only once the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = _tmp_sibling(final)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(final).with_suffix(final.suffix)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not tmp.exists():
        raise StorageError(
            f"writing {str(final)!r}: the temporary file {str(tmp)!r} was never written"
        )
    os.replace(tmp, final)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_parquet(df: Any, path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write a DataFrame as Parquet, atomically, with ``record`` (provenance) as JSON
    under the key ``pathpipe`` of the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"pathpipe"] = provenance_json(record).encode()
    with atomic_file(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def provenance_json(record: dict[str, Any]) -> str:
    """``record`` as compact JSON (NumPy scalars and arrays, paths converted)."""
    return json.dumps(record, default=_json_default)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def open_store(path: str | os.PathLike[str], *, stage: str | None = None) -> Any:
    """Open a finished pathpipe Zarr store read-only.

    Raises
    ------
    StorageError
        The path is missing, not a Zarr store, was not written completely, or
        was written by another stage than ``stage``.
    """
    import zarr

    from pathpipe.io.jpeg_codec import register

    register()  # tiles kept as the slide's JPEG bytes
    p = Path(path)
    if not p.exists():
        raise StorageError(f"store {str(p)!r} does not exist")
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # zarr raises several types
        raise StorageError(f"store {str(p)!r} is not a readable Zarr group: {exc}") from exc
    meta = group.attrs.get("pathpipe")
    if not isinstance(meta, dict) or not meta.get("complete"):
        raise StorageError(
            f"store {str(p)!r} is incomplete or not written by pathpipe "
            "(no attrs['pathpipe']['complete']); rerun the step that writes it"
        )
    if stage is not None and meta.get("stage") != stage:
        raise StorageError(
            f"store {str(p)!r} was written by stage {meta.get('stage')!r}, expected {stage!r}"
        )
    return group


def shard_items(item_nbytes: int, *, target: int | None = None) -> int:
    """Items per shard file: the largest power of two, 1 to 256, whose items hold at
    most ``target`` (default :data:`SHARD_BYTES`) bytes uncompressed."""
    fit = (SHARD_BYTES if target is None else target) // max(1, int(item_nbytes))
    return int(min(256, 2 ** max(0, int(fit).bit_length() - 1)))


def _encode_chunk(codec: Any, block: Any, chunk_shape: tuple[int, ...], dtype: Any) -> bytes:
    """``block`` (the chunk's shape and dtype) encoded with a numcodecs codec or as raw bytes."""
    import numpy as np

    block = np.ascontiguousarray(block)
    if block.shape != chunk_shape or block.dtype != dtype:
        raise StorageError(
            f"chunk of shape {block.shape} and dtype {block.dtype} received, "
            f"expected {chunk_shape} {dtype}"
        )
    if codec is None:
        return bytes(block.tobytes())
    return bytes(codec.encode(block))


def _chunk_codec(codecs: list[dict[str, Any]], dtype: Any, who: str) -> Any:
    """numcodecs Blosc equal to a ``[bytes, blosc]`` codec list, or None for ``[bytes]``."""
    import numcodecs
    import numpy as np

    codec = None
    if len(codecs) == 2:
        blosc = codecs[1]["configuration"]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]]
        codec = numcodecs.Blosc(cname=blosc["cname"], clevel=blosc["clevel"], shuffle=shuffle)
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    if np.dtype(dtype).itemsize > 1 and endian != sys.byteorder:
        raise StorageError(
            f"{who} writes native byte order; the array's bytes codec is {endian}-endian"
        )
    return codec


class ShardWriter:
    """Write whole shards of a sharded Zarr v3 array from encoded inner chunks.

    The tiles of a slide are stored as one inner chunk per tile, grouped into
    shard files of many tiles, so a slide is a few hundred files rather than one
    file per tile (parallel file systems on clusters handle millions of small
    files badly) while a single tile stays cheap to read. This writer builds the
    shard bytes itself, as the ``sharding_indexed`` codec specifies: the encoded
    chunks one after another, then the index of ``(offset, nbytes)`` uint64
    pairs in C order (``2**64 - 1`` for a missing chunk) with its CRC-32C. The
    result is an ordinary Zarr array that zarr-python (and any Zarr v3 reader)
    opens; zarr-python's own write path costs milliseconds per chunk.

    Parameters
    ----------
    array : zarr.Array
        Created by zarr in a local directory store with ``shards`` spanning every
        axis but the first, inner chunks of one item along the first axis, inner
        codecs ``bytes`` then optionally ``blosc``, index codecs ``bytes``
        (little-endian) and ``crc32c`` at the end of the shard, and
        ``chunk_key_encoding={"name": "default", "separator": "."}``.
    directory : path-like
        Directory of that array (``<store>/<name>``).
    """

    _MISSING = 2**64 - 1

    def __init__(self, array: Any, directory: str | os.PathLike[str]) -> None:
        meta = array.metadata.to_dict()
        shape = meta["shape"]
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        enc = meta["chunk_key_encoding"]
        conf = meta["codecs"][0].get("configuration", {}) if meta["codecs"] else {}
        inner = conf.get("chunk_shape", [])
        codecs = [c["name"] for c in conf.get("codecs", [])]
        index = [c["name"] for c in conf.get("index_codecs", [])]
        index_endian = (
            (conf.get("index_codecs") or [{}])[0].get("configuration", {}).get("endian", "little")
        )
        if (
            meta.get("zarr_format") != 3
            or [c["name"] for c in meta["codecs"]] != ["sharding_indexed"]
            or codecs not in (["bytes", "blosc"], ["bytes"], [_SOURCE_JPEG])
            or index != ["bytes", "crc32c"]
            or index_endian != "little"
            or conf.get("index_location", "end") != "end"
            or list(shard[1:]) != list(shape[1:])
            or list(inner) != [1, *shape[1:]]
            or enc["name"] != "default"
            or enc.get("configuration", {}).get("separator", "/") != "."
        ):
            raise StorageError(
                "ShardWriter needs a sharded Zarr v3 array with shards spanning all but the first "
                "axis, inner chunks of one item, inner codecs [bytes, blosc], [bytes] or "
                f"[{_SOURCE_JPEG}], index "
                "codecs [bytes (little-endian), crc32c] at the end and the '.' key separator; "
                f"received shape {shape}, shards {shard}, inner chunks {inner}, codecs "
                f"{[c['name'] for c in meta['codecs']]}/{codecs}, index codecs {index} "
                f"({index_endian}-endian, {conf.get('index_location')}), key encoding {enc}"
            )
        #: Whether chunks are a slide's own JPEG tiles (written as given, never encoded).
        self.source_jpeg = codecs == [_SOURCE_JPEG]
        self._codec = (
            None if self.source_jpeg else _chunk_codec(conf["codecs"], array.dtype, "ShardWriter")
        )
        self._chunk_shape = tuple(inner)
        self._dtype = array.dtype
        self._dir = os.fspath(directory)
        self._tail = "".join(".0" for _ in shape[1:])
        #: Items (inner chunks) per shard.
        self.shard_size = int(shard[0])

    def encode(self, block: Any) -> bytes:
        """Encode one inner chunk (one item); ``block`` must have its shape and dtype."""
        if self.source_jpeg:
            raise StorageError(
                f"ShardWriter: chunks of a {_SOURCE_JPEG} array are the slide's own JPEG tiles; "
                "pass their bytes to write() (pixels cannot be re-encoded without loss)"
            )
        return _encode_chunk(self._codec, block, self._chunk_shape, self._dtype)

    def key_path(self, index: int) -> str:
        """File of shard ``index`` along the first axis."""
        return os.path.join(self._dir, f"c.{index}{self._tail}")

    def write(self, index: int, chunks: list[bytes]) -> None:
        """Write shard ``index`` holding the encoded items ``chunks``, in order.

        Fewer than :attr:`shard_size` chunks leave the rest of the shard missing
        (read as the fill value), as for the last shard of an array.
        """
        import google_crc32c
        import numpy as np

        if not 0 < len(chunks) <= self.shard_size:
            raise StorageError(
                f"shard {index}: {len(chunks)} chunks received, expected 1..{self.shard_size}"
            )
        table = np.full((self.shard_size, 2), self._MISSING, dtype="<u8")
        sizes = np.fromiter((len(c) for c in chunks), dtype=np.uint64, count=len(chunks))
        table[: len(chunks), 1] = sizes
        table[: len(chunks), 0] = np.cumsum(sizes) - sizes
        index_bytes = table.tobytes()
        crc = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
        with open(self.key_path(index), "wb") as fh:
            fh.writelines([*chunks, index_bytes, crc])
