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
    "ChunkWriter",
    "atomic_dir",
    "atomic_file",
    "file_checksum",
    "open_store",
    "provenance",
    "provenance_json",
    "source_record",
    "write_json",
    "write_parquet",
]

_CHUNK = 8 * 1024 * 1024


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


class ChunkWriter:
    """Write whole chunks of a Zarr v3 array as encoded bytes, from any thread.

    zarr-python's ``array[i] = tile`` costs about 2.5 ms of Python overhead per
    chunk, several times the JPEG decode of the tile. This writer encodes a chunk
    with the array's own Blosc codec (numcodecs, GIL released) and writes the
    file at the key the Zarr v3 spec assigns (default chunk-key encoding with
    the ``.`` separator: ``c.<i>.0.0.0``, flat files, no directory per chunk),
    so the result is an ordinary Zarr array.

    Parameters
    ----------
    array : zarr.Array
        Created by zarr in a local directory store with codecs ``bytes`` then
        ``blosc``, ``chunk_key_encoding={"name": "default", "separator": "."}``
        and chunks spanning every axis but the first.
    directory : path-like
        Directory of that array (``<store>/<name>``).
    """

    def __init__(self, array: Any, directory: str | os.PathLike[str]) -> None:
        import numcodecs
        import numpy as np

        meta = array.metadata.to_dict()
        codecs = [c["name"] for c in meta["codecs"]]
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        enc = meta["chunk_key_encoding"]
        if (
            meta.get("zarr_format") != 3
            or codecs not in (["bytes", "blosc"], ["bytes"])
            or list(chunks[1:]) != list(shape[1:])
            or enc["name"] != "default"
            or enc.get("configuration", {}).get("separator", "/") != "."
        ):
            raise StorageError(
                f"ChunkWriter needs a Zarr v3 array with codecs [bytes, blosc] or [bytes], '.' key separator and "
                f"chunks spanning all but the first axis; received codecs {codecs}, "
                f"shape {shape}, chunks {chunks}, key encoding {enc}"
            )
        self._codec = None
        if codecs == ["bytes", "blosc"]:
            blosc = meta["codecs"][1]["configuration"]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[blosc["shuffle"]]
            self._codec = numcodecs.Blosc(
                cname=blosc["cname"], clevel=blosc["clevel"], shuffle=shuffle
            )
        endian = meta["codecs"][0].get("configuration", {}).get("endian", "little")
        if np.dtype(array.dtype).itemsize > 1 and endian != sys.byteorder:
            raise StorageError(
                f"ChunkWriter writes native byte order; the array's bytes codec is {endian}-endian"
            )
        self._chunk_shape = tuple(chunks)
        self._dtype = array.dtype
        self._dir = os.fspath(directory)
        self._tail = "".join(".0" for _ in chunks[1:])

    def encode(self, block: Any) -> bytes:
        """Encode one chunk; ``block`` must have the chunk's shape and dtype."""
        import numpy as np

        block = np.ascontiguousarray(block)
        if block.shape != self._chunk_shape or block.dtype != self._dtype:
            raise StorageError(
                f"chunk of shape {block.shape} and dtype {block.dtype} received, "
                f"expected {self._chunk_shape} {self._dtype}"
            )
        if self._codec is None:
            return block.tobytes()
        return self._codec.encode(block)

    def key_path(self, index: int) -> str:
        """File of chunk ``index`` along the first axis."""
        return os.path.join(self._dir, f"c.{index}{self._tail}")

    def write(self, index: int, data: bytes) -> None:
        """Write encoded chunk ``index`` along the first axis."""
        with open(self.key_path(index), "wb") as fh:
            fh.write(data)

    def move(self, src: int, dst: int) -> None:
        """Renumber chunk ``src`` as ``dst`` (used to compact after filtering)."""
        if src != dst:
            os.replace(self.key_path(src), self.key_path(dst))
