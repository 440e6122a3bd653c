"""Loaders of real data sets from local files, on tiny files written here."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from specdyn.problems import datasets


def _write_idx(path, array, gz=False):
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    big = array.astype(array.dtype.newbyteorder(">"))
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + big.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 4, 5, 9], np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", x, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", y, gz)
    gx, gy = datasets.load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
    assert gy.dtype == np.int64
    with pytest.raises(FileNotFoundError, match="train-images"):
        datasets.load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        datasets.load_mnist(tmp_path, "val")


def test_idx_other_dtypes_and_bad_files(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    _write_idx(tmp_path / "a.idx", a)
    np.testing.assert_array_equal(datasets.load_idx(tmp_path / "a.idx"), a)
    f = np.linspace(0, 1, 4, dtype=np.float32)
    _write_idx(tmp_path / "f.idx", f, gz=True)
    np.testing.assert_array_equal(datasets.load_idx(tmp_path / "f.idx"), f)
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.load_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes((tmp_path / "a.idx").read_bytes()[:-4])
    with pytest.raises(ValueError, match="header says"):
        datasets.load_idx(tmp_path / "short")


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    rows = img.transpose(0, 3, 1, 2).reshape(3, -1)  # the file's layout: R plane, G plane, B plane
    for name, sl in (("data_batch_1", slice(0, 2)), ("data_batch_2", slice(2, 3))):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rows[sl], b"labels": [7, 3, 1][sl]}, fh)
    x, y = datasets.load_cifar10(tmp_path, "train")
    np.testing.assert_array_equal(x, img)
    np.testing.assert_array_equal(y, [7, 3, 1])
    with pytest.raises(FileNotFoundError, match="test_batch"):
        datasets.load_cifar10(tmp_path, "test")


def test_long_tailed_subsampling():
    y = np.repeat(np.arange(10), 100)
    x = np.arange(1000)[:, None]
    counts = datasets.long_tailed_counts(np.full(10, 100), 100)
    assert counts[0] == 100 and counts[-1] == 1  # rho = n_max / n_min
    assert np.all(np.diff(counts) <= 0)
    np.testing.assert_allclose(counts, np.round(100 * 100.0 ** (-np.arange(10) / 9)))
    xs, ys = datasets.long_tailed(x, y, 100, seed=0)
    np.testing.assert_array_equal(np.bincount(ys, minlength=10), counts)
    np.testing.assert_array_equal(y[xs[:, 0]], ys)  # the pairs stay together
    other = datasets.long_tailed_indices(y, 100, seed=1)
    assert other.shape == xs.shape[:1] and not np.array_equal(np.sort(other), np.sort(xs[:, 0]))
    assert datasets.long_tailed_indices(y, 1).shape == (1000,)  # ratio 1: balanced, everything kept
    with pytest.raises(ValueError, match="imbalance_ratio"):
        datasets.long_tailed_indices(y, 0.5)


def test_tokens_text_and_nanogpt_bin(tmp_path):
    (tmp_path / "input.txt").write_text("héllo\n", encoding="utf-8")
    ids, vocab = datasets.load_tokens(tmp_path / "input.txt")
    assert vocab == 256 and ids.dtype == np.int32
    assert bytes(ids.astype(np.uint8)) == "héllo\n".encode()
    tok = np.array([50256, 15496, 11, 995], np.uint16)
    tok.tofile(tmp_path / "train.bin")
    ids, vocab = datasets.load_tokens(tmp_path / "train.bin", vocab=50304)
    np.testing.assert_array_equal(ids, tok)
    assert vocab == 50304
    assert datasets.load_tokens(tmp_path / "train.bin")[1] == 50257
    with pytest.raises(ValueError, match="vocab"):
        datasets.load_tokens(tmp_path / "train.bin", vocab=100)
    with pytest.raises(FileNotFoundError):
        datasets.load_tokens(tmp_path / "missing.txt")
