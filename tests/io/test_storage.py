"""Atomic writes, provenance, store validation and the shard writer."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from pathpipe.errors import StorageError
from pathpipe.io.storage import (
    ShardWriter,
    atomic_dir,
    atomic_file,
    file_checksum,
    open_store,
    source_record,
)


def test_checksum_and_source_record(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"pathpipe" * 10_000)
    assert file_checksum(p) == "sha256:" + hashlib.sha256(b"pathpipe" * 10_000).hexdigest()
    rec = source_record(p)
    assert rec["size"] == 80_000 and rec["path"] == str(p.resolve())
    assert "checksum" not in source_record(p, checksum=False)


def test_atomic_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "out.zarr"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed")
    assert (final / "a").read_text() == "1"  # old output intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]  # no leftovers
    with atomic_dir(final) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["b"]


def test_atomic_file(tmp_path):
    final = tmp_path / "x.json"
    with pytest.raises(ValueError), atomic_file(final) as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match="never written"), atomic_file(final):
        pass


def test_open_store_refuses_incomplete(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        open_store(tmp_path / "none.zarr")
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    with pytest.raises(StorageError, match="incomplete"):
        open_store(tmp_path / "a.zarr")
    g.attrs["pathpipe"] = {"complete": True, "stage": "tiling"}
    assert open_store(tmp_path / "a.zarr", stage="tiling") is not None
    with pytest.raises(StorageError, match="expected 'segmentation'"):
        open_store(tmp_path / "a.zarr", stage="segmentation")
    (tmp_path / "junk.zarr").write_text("not a store")
    with pytest.raises(StorageError):
        open_store(tmp_path / "junk.zarr")


def _sharded(tmp_path, compressors, shape=(10, 4, 5, 3), per_shard=4):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    return root.create_array(
        "t",
        shape=shape,
        chunks=(1, *shape[1:]),
        shards=(per_shard, *shape[1:]),
        dtype="uint8",
        compressors=compressors,
        chunk_key_encoding={"name": "default", "separator": "."},
    )


@pytest.mark.parametrize(
    "compressors", [BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle"), None]
)
def test_shard_writer_writes_an_ordinary_sharded_zarr_array(tmp_path, compressors):
    arr = _sharded(tmp_path, compressors)
    w = ShardWriter(arr, tmp_path / "s.zarr" / "t")
    assert w.shard_size == 4
    data = np.random.default_rng(0).integers(0, 255, (10, 4, 5, 3), dtype=np.uint8)
    for s in range(3):  # shards of 4, 4 and 2 items: the last one is partial
        w.write(s, [w.encode(data[i : i + 1]) for i in range(4 * s, min(4 * s + 4, 10))])
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "t").glob("c.*")) == [
        "c.0.0.0.0",
        "c.1.0.0.0",
        "c.2.0.0.0",
    ]
    back = zarr.open_array(str(tmp_path / "s.zarr" / "t"), mode="r")
    np.testing.assert_array_equal(back[:], data)
    np.testing.assert_array_equal(back[5], data[5])  # one chunk read through the index
    # a shard with fewer chunks leaves the rest at the fill value
    w.write(2, [w.encode(data[9:10])])
    back = zarr.open_array(str(tmp_path / "s.zarr" / "t"), mode="r")
    np.testing.assert_array_equal(back[8], data[9])
    assert (back[9] == 0).all()
    # the index checksum is checked by zarr: a corrupted index is an error
    path = tmp_path / "s.zarr" / "t" / "c.0.0.0.0"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum do not match"):
        zarr.open_array(str(tmp_path / "s.zarr" / "t"), mode="r")[0]


def test_shard_writer_rejects_bad_input(tmp_path):
    arr = _sharded(tmp_path, None)
    w = ShardWriter(arr, tmp_path / "s.zarr" / "t")
    with pytest.raises(StorageError, match=r"expected \(1, 4, 5, 3\) uint8"):
        w.encode(np.zeros((2, 4, 5, 3), np.uint8))
    chunk = w.encode(np.zeros((1, 4, 5, 3), np.uint8))
    with pytest.raises(StorageError, match=r"5 chunks received, expected 1..4"):
        w.write(0, [chunk] * 5)
    with pytest.raises(StorageError, match=r"0 chunks received"):
        w.write(0, [])
    plain = zarr.open_group(str(tmp_path / "p.zarr"), mode="w").create_array(
        "t", shape=(3, 4), chunks=(1, 4), dtype="uint8"
    )
    with pytest.raises(StorageError, match=r"ShardWriter needs .* received shape \(3, 4\)"):
        ShardWriter(plain, tmp_path / "p.zarr" / "t")
    inner2 = zarr.open_group(str(tmp_path / "q.zarr"), mode="w").create_array(
        "t", shape=(8, 4), chunks=(2, 4), shards=(4, 4), dtype="uint8"
    )
    with pytest.raises(StorageError, match=r"inner chunks \(2, 4\)"):
        ShardWriter(inner2, tmp_path / "q.zarr" / "t")


def test_shard_writer_takes_source_jpeg_chunks_as_given(tmp_path):
    import imagecodecs

    from pathpipe.io.jpeg_codec import SourceJpegCodec, register

    register()
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    arr = root.create_array(
        "t",
        shape=(3, 16, 16, 3),
        chunks=(1, 16, 16, 3),
        shards=(2, 16, 16, 3),
        dtype="uint8",
        serializer=SourceJpegCodec(outcolorspace=2),
        compressors=None,
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    w = ShardWriter(arr, tmp_path / "s.zarr" / "t")
    assert w.source_jpeg
    with pytest.raises(StorageError, match="own JPEG tiles"):
        w.encode(np.zeros((1, 16, 16, 3), np.uint8))
    tiles = [np.full((16, 16, 3), v, np.uint8) for v in (0, 128, 255)]
    jpegs = [imagecodecs.jpeg8_encode(t, level=95) for t in tiles]
    w.write(0, jpegs[:2])
    w.write(1, jpegs[2:])
    back = zarr.open_array(str(tmp_path / "s.zarr" / "t"), mode="r")[:]
    for b, j in zip(back, jpegs, strict=True):
        np.testing.assert_array_equal(b, imagecodecs.jpeg8_decode(j))
