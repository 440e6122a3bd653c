"""Real data sets from local files in their standard formats (nothing is downloaded).

The papers' real-data experiments use image and text sets that cannot be fetched
here; a user who has the files passes their folder or path:

* :func:`load_idx` — one IDX file (MNIST, Fashion-MNIST, KMNIST, EMNIST), gzipped or not;
* :func:`load_mnist` — the four standard MNIST / Fashion-MNIST files in a folder
  (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``);
* :func:`load_cifar10` — the CIFAR-10 "python version" pickle batches
  (``data_batch_1`` … ``data_batch_5``, ``test_batch``, optionally inside
  ``cifar-10-batches-py/``);
* :func:`long_tailed_indices` / :func:`long_tailed` — the standard long-tailed
  subsampling with imbalance ratio ρ = n_max / n_min (Cao et al. 2019): class c of K
  keeps n_c = round(n_max · ρ^(−c/(K−1))) examples (c = 0 the head, c = K−1 the tail);
* :func:`load_tokens` — a language-model corpus: a plain-text file as bytes (vocabulary
  256) or a nanoGPT-style ``.bin`` file of uint16 token ids.

Every loader returns NumPy arrays (images as uint8 in their file layout, labels as
int64); scaling and standardising are left to the experiment.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

__all__ = [
    "load_cifar10",
    "load_idx",
    "load_mnist",
    "load_tokens",
    "long_tailed",
    "long_tailed_counts",
    "long_tailed_indices",
]

# IDX type codes (third byte of the magic number) -> big-endian dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def load_idx(path) -> np.ndarray:
    """One IDX file (gzipped or not) as an array of its stored shape and native-endian dtype.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian int32, then the data (big-endian, row-major).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {str(path)!r}")
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (magic bytes {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], ">i4"))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"{str(path)!r}: header says shape {shape} ({count * dtype.itemsize} bytes of "
                         f"{dtype}), the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        for candidate in (folder / name, folder / name.replace("-idx", ".idx")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {stem!r} (or {stem}.gz) in {str(folder)!r}")


def load_mnist(folder, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST (same file names) from ``folder``: (images (N, 28, 28) uint8,
    labels (N,) int64). ``split`` is "train" or "test" (the ``t10k`` files)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split=!r}")
    folder = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    y = load_idx(_find(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{str(folder)!r}: images {x.shape} and labels {y.shape} do not match")
    return x, y


def load_cifar10(folder, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python pickle batches from ``folder`` (or ``folder/cifar-10-batches-py``):
    (images (N, 32, 32, 3) uint8, labels (N,) int64). ``split``: "train" (data_batch_1..5,
    those present, in order) or "test" (test_batch)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split=!r}")
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    files = [folder / n for n in names if (folder / n).is_file()]
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 {split} batches ({', '.join(names)}) in {str(folder)!r}")
    xs, ys = [], []
    for f in files:
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # the official files are Python-2 pickles
        data = np.asarray(batch[b"data"], np.uint8)
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[b"labels"], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def long_tailed_counts(available, imbalance_ratio: float) -> np.ndarray:
    """n_c = min(available_c, round(n_max · ρ^(−c/(K−1)))), at least 1, with n_max = available_0."""
    available = np.asarray(available, np.int64)
    if not (np.isscalar(imbalance_ratio) and float(imbalance_ratio) >= 1):
        raise ValueError(f"imbalance_ratio must be a number >= 1 (n_max / n_min), got {imbalance_ratio=!r}")
    k = available.shape[0]
    frac = float(imbalance_ratio) ** (-np.arange(k) / max(k - 1, 1))
    want = np.maximum(1, np.round(available[0] * frac)).astype(np.int64)
    return np.minimum(want, available)


def long_tailed_indices(labels, imbalance_ratio: float, *, seed: int = 0, classes: int | None = None) -> np.ndarray:
    """Indices of a long-tailed subset of ``labels`` (classes 0..K−1, class 0 the head):
    class c keeps :func:`long_tailed_counts` examples, chosen at random by ``seed``.

    Every class's count depends only on the class sizes, so every seed gives a subset of
    the same size and class counts (runs over seeds can be stacked).
    """
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if classes is None else int(classes)
    rng = np.random.default_rng(seed)
    per_class = [np.flatnonzero(labels == c) for c in range(k)]
    counts = long_tailed_counts([len(i) for i in per_class], imbalance_ratio)
    if np.any(counts == 0):
        raise ValueError(f"every class needs at least one example; class sizes {[len(i) for i in per_class]}")
    return np.concatenate([rng.permutation(i)[:n] for i, n in zip(per_class, counts, strict=True)])


def long_tailed(x, y, imbalance_ratio: float, *, seed: int = 0, classes: int | None = None):
    """(x[idx], y[idx]) for ``idx = long_tailed_indices(y, imbalance_ratio, seed=seed)``."""
    idx = long_tailed_indices(y, imbalance_ratio, seed=seed, classes=classes)
    return np.asarray(x)[idx], np.asarray(y)[idx]


def load_tokens(path, *, vocab: int | None = None) -> tuple[np.ndarray, int]:
    """A language-model corpus as (token ids int32, vocabulary size).

    A ``.bin`` file is read as nanoGPT's format: a flat array of uint16 token ids (no
    header); the vocabulary is ``vocab`` or, if not given, the largest id + 1. Any other
    file is read as text bytes (UTF-8 is kept byte by byte): vocabulary 256.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text or token file at {str(path)!r}")
    if path.suffix == ".bin":
        if path.stat().st_size % 2:
            raise ValueError(f"{str(path)!r}: a .bin token file holds uint16 ids (even size), got "
                             f"{path.stat().st_size} bytes")
        ids = np.fromfile(path, dtype="<u2").astype(np.int32)
        size = int(ids.max()) + 1 if vocab is None else int(vocab)
        if ids.size and ids.max() >= size:
            raise ValueError(f"{str(path)!r}: token id {int(ids.max())} >= vocab={size}")
        return ids, size
    return np.frombuffer(path.read_bytes(), np.uint8).astype(np.int32), 256
