"""Datasets for the course, all usable without a network.

Three kinds of data live here:

1. **scikit-learn's bundled tabular sets** (shipped inside the scikit-learn wheel, no download):
   :func:`load_wine`, :func:`load_breast_cancer`, :func:`load_digits_images`, plus a seeded
   :func:`train_test_split`. Wine and breast cancer have features on wildly different scales,
   which is exactly the situation normalization is for.
2. **A seeded synthetic stream** for chapter 4's moving averages: :func:`make_stream`. The same
   seed gives the same arrays on every machine.
3. **Fashion-MNIST** for the LeNet experiment: :func:`load_fashion_mnist` and
   :func:`fashion_mnist_loaders`. The gzipped IDX files are parsed here (no torchvision).
   They are looked for, in order, in

   a. ``data_dir=`` if given;
   b. the directory named by the environment variable ``BNCOURSE_FASHION_MNIST``;
   c. Debian/Ubuntu's package ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist/``;
   d. the user cache ``$XDG_CACHE_HOME/bncourse/fashion-mnist`` (default ``~/.cache/...``).

   Nothing here touches the network. Where no place has the files, the error says how to get
   them, one way being ``bncourse get-data fashion-mnist`` (:mod:`bncourse.get_data`), which
   downloads them into the user cache and checks their SHA-256.

Letters follow the rest of the course: N examples, D features, C channels, H, W spatial.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    # tabular (scikit-learn, bundled)
    "load_wine",
    "load_breast_cancer",
    "load_digits_images",
    "train_test_split",
    # synthetic
    "make_stream",
    # Fashion-MNIST
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SHA256",
    "DEBIAN_FASHION_MNIST_DIR",
    "FashionMNISTNotFoundError",
    "IDXFormatError",
    "read_idx",
    "fashion_mnist_search_dirs",
    "fashion_mnist_cache_dir",
    "load_fashion_mnist",
    "fashion_mnist_loaders",
    "clear_cache",
]


# --------------------------------------------------------------------------------------------
# 1. Tabular data bundled with scikit-learn
# --------------------------------------------------------------------------------------------


def _from_sklearn(bunch) -> tuple[np.ndarray, np.ndarray, list[str]]:
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y, [str(name) for name in bunch.feature_names]


def load_wine() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The UCI wine recognition set (bundled with scikit-learn; no network).

    Features range from about 0.1 (hue) to over 1000 (proline): a clear case for normalizing.

    Returns:
        X: float64 array of shape (N, D) = (178, 13).
        y: int64 array of shape (N,), classes 0, 1, 2.
        feature_names: list of D strings.
    """
    from sklearn import datasets

    return _from_sklearn(datasets.load_wine())


def load_breast_cancer() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The Wisconsin diagnostic breast cancer set (bundled with scikit-learn; no network).

    Features range from about 0.001 (fractal dimension) to over 4000 (worst area).

    Returns:
        X: float64 array of shape (N, D) = (569, 30).
        y: int64 array of shape (N,), 0 = malignant, 1 = benign.
        feature_names: list of D strings.
    """
    from sklearn import datasets

    return _from_sklearn(datasets.load_breast_cancer())


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (bundled; no network).

    Returns:
        images: float64 array of shape (N, H, W) = (1797, 8, 8), pixel values in 0..16.
            Use ``images[:, None]`` for (N, 1, 8, 8) or ``images.reshape(N, 64)`` for (N, D).
        y: int64 array of shape (N,), digits 0..9.
    """
    from sklearn import datasets

    bunch = datasets.load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def train_test_split(
    X, y, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle and split into train and test parts, reproducibly.

    Args:
        X: array of shape (N, ...).
        y: array of shape (N,).
        test_fraction: share of the N examples that go to the test part, in (0, 1).
            The test part has ``round(test_fraction * N)`` examples (at least 1, at most N - 1).
        seed: seed of ``numpy.random.default_rng``; same seed, same split.

    Returns:
        X_train (N_train, ...), X_test (N_test, ...), y_train (N_train,), y_test (N_test,),
        in scikit-learn's order. Works for numpy arrays and torch tensors alike.
    """
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X and y must have the same length N; got X: {n}, y: {len(y)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 examples to split; got N = {n}")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)  # (N,)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return X[train_idx], X[test_idx], y[train_idx], y[test_idx]


# --------------------------------------------------------------------------------------------
# 2. Synthetic data
# --------------------------------------------------------------------------------------------


def make_stream(n: int = 200, seed: int = 0, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 1-D stream, for moving-average (running statistics) plots.

    The clean signal is a slow sine wave on a gentle upward drift, with a level shift of +3 at
    ``t = n // 2`` (so a moving average visibly lags). The stream is the signal plus N(0, noise^2).

    Args:
        n: length T of the stream.
        seed: seed of ``numpy.random.default_rng``.
        noise: standard deviation of the noise.

    Returns:
        x: float64 array of shape (T,), the noisy observations.
        signal: float64 array of shape (T,), the clean signal x is drawn around.
    """
    if n < 1:
        raise ValueError(f"n must be positive; got {n}")
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)  # (T,)
    signal = 2.0 * np.sin(2 * np.pi * t / max(n, 1) * 1.5) + 0.01 * t + 3.0 * (t >= n // 2)
    x = signal + noise * rng.standard_normal(n)  # (T,)
    return x, signal


# --------------------------------------------------------------------------------------------
# 3. Fashion-MNIST
# --------------------------------------------------------------------------------------------

#: Class names, index = label (from Zalando's README).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: split -> (images file, labels file), the names Zalando and Debian both use.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: SHA-256 of the official gzipped files (also what Debian's dataset-fashion-mnist ships).
FASHION_MNIST_SHA256: dict[str, str] = {
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}

#: Where Debian/Ubuntu's ``dataset-fashion-mnist`` package installs the files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

ENV_DIR = "BNCOURSE_FASHION_MNIST"

# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte), the number of dims.
_IDX_MAGIC = {1: 2049, 3: 2051}  # ndim -> magic (labels, images)


class FashionMNISTNotFoundError(FileNotFoundError):
    """No copy of Fashion-MNIST could be found. The message says how to get one."""


class IDXFormatError(ValueError):
    """An IDX file is corrupt: wrong magic number, bad dimensions, truncated, or bad gzip."""


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, gzipped (``.gz``, detected by content) or plain.

    The format (big-endian): a 4-byte magic number ``0x0000 08 ndim`` (2049 for labels with one
    dim, 2051 for images with three), then ``ndim`` 4-byte sizes, then the data, row-major.

    Args:
        path: the file.
        expected_ndim: if given, 1 (labels, magic 2049) or 3 (images, magic 2051) is required.

    Returns:
        uint8 array of the stored shape, e.g. (N,) for labels, (N, H, W) for images. Read-only.

    Raises:
        IDXFormatError: on a bad gzip stream, a wrong magic number, or a file shorter (or longer)
            than its header says.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if expected_ndim is not None:
        want = _IDX_MAGIC[expected_ndim]
        if magic != want:
            raise IDXFormatError(
                f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected {want} "
                f"({'labels' if expected_ndim == 1 else 'images'}, unsigned bytes, {expected_ndim} dims)"
            )
    elif zero != 0 or type_code != 0x08 or ndim == 0:
        raise IDXFormatError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected 0x000008NN "
            "(unsigned bytes, NN dims), e.g. 2049 or 2051"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated: header needs {header} bytes, file has {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise IDXFormatError(
            f"{path}: {what}: dims {dims} need {size} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def fashion_mnist_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bncourse/fashion-mnist``, or ``~/.cache/bncourse/fashion-mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bncourse" / "fashion-mnist"


def fashion_mnist_search_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The places :func:`load_fashion_mnist` looks, in order, as (description, directory) pairs."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("data_dir argument", Path(data_dir)))
    env = os.environ.get(ENV_DIR)
    if env:
        dirs.append((f"${ENV_DIR}", Path(env)))
    dirs.append(("Debian package dataset-fashion-mnist", DEBIAN_FASHION_MNIST_DIR))
    dirs.append(("user cache", fashion_mnist_cache_dir()))
    return dirs


def _find_file(directory: Path, name: str) -> Path | None:
    """``name`` (gzipped) or the same name without ``.gz`` (already unpacked) in ``directory``."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_split(split: str, data_dir) -> tuple[tuple[Path, Path] | None, list[str]]:
    """Return ((images path, labels path) or None, list of places searched)."""
    names = FASHION_MNIST_FILES[split]
    searched = []
    for description, directory in fashion_mnist_search_dirs(data_dir):
        found = [_find_file(directory, name) for name in names]
        if all(found):
            return (found[0], found[1]), searched
        missing = [name for name, f in zip(names, found) if f is None]
        if description in ("data_dir argument", f"${ENV_DIR}"):
            # An explicit choice that does not hold the data is an error, not a reason to go on.
            raise FashionMNISTNotFoundError(
                f"{description} points to {directory}, which lacks {', '.join(missing)}"
                + ("" if directory.is_dir() else " (no such directory)")
                + f". Put the Fashion-MNIST files for split {split!r} there, or unset it."
            )
        searched.append(f"{directory} ({description})")
    return None, searched


def _not_found_message(split: str, searched: list[str]) -> str:
    names = ", ".join(FASHION_MNIST_FILES[split])
    lines = [
        f"Fashion-MNIST ({split!r} split: {names}) not found. The course never downloads behind your back.",
        "Searched:",
        *[f"  - {place}" for place in searched],
        "Ways to get the data:",
        "  - Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (installs to "
        f"{DEBIAN_FASHION_MNIST_DIR})",
        f"  - put the four .gz files in a directory and set {ENV_DIR}=/that/directory "
        "(or pass data_dir=...)",
        "  - download them once into the user cache (checked by SHA-256): bncourse get-data fashion-mnist",
    ]
    return "\n".join(lines)


def _check_split(split: str) -> str:
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    return split


@functools.lru_cache(maxsize=8)
def _decode_cached(images_path: str, labels_path: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split once per process. ``stamp`` (sizes, mtimes) invalidates on file change."""
    images = read_idx(images_path, expected_ndim=3)  # (N, H, W) uint8
    labels = read_idx(labels_path, expected_ndim=1)  # (N,) uint8
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    return images, labels


def clear_cache() -> None:
    """Forget the in-process cache of decoded Fashion-MNIST arrays."""
    _decode_cached.cache_clear()


def _stamp(*paths: Path) -> tuple:
    stats = [p.stat() for p in paths]
    return tuple((s.st_size, s.st_mtime_ns) for s in stats)


def load_fashion_mnist(
    split: str = "train",
    *,
    normalize: bool = True,
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
):
    """Load a Fashion-MNIST split from disk as torch tensors (never from the network).

    Search order: ``data_dir``, ``$BNCOURSE_FASHION_MNIST``, Debian's
    ``/usr/share/datasets/fashion-mnist/``, the user cache (where ``bncourse get-data fashion-mnist``
    puts them). ``data_dir`` and the environment variable are explicit choices, so if either is set
    but lacks the files, that is an error.

    Decoded arrays are cached in-process: loading the same split twice decodes it once.

    Args:
        split: "train" (60000 examples) or "test" (10000).
        normalize: if True, images are float32 in [0, 1] (pixel / 255); if False, raw uint8 0..255.
        limit: keep only the first ``limit`` examples.
        data_dir: a directory holding the files (looked at first).

    Returns:
        images: tensor of shape (N, C, H, W) = (N, 1, 28, 28), float32 in [0, 1] (or uint8).
        labels: int64 tensor of shape (N,), values 0..9; names in :data:`FASHION_MNIST_CLASSES`.
        The tensors are fresh copies; changing them does not change the cache.

    Raises:
        FashionMNISTNotFoundError: no copy found; the message lists the places searched and every
            way to get the data.
        IDXFormatError: a file is corrupt or truncated.
    """
    import torch

    _check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative or None; got {limit}")
    found, searched = _find_split(split, data_dir)
    if found is None:
        raise FashionMNISTNotFoundError(_not_found_message(split, searched))
    images_path, labels_path = found

    images, labels = _decode_cached(
        str(images_path), str(labels_path), _stamp(images_path, labels_path)
    )  # (N, H, W) uint8, (N,) uint8
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    images = images[:, None]  # (N, 1, H, W) uint8, a read-only view of the cache
    if normalize:
        # One pass, straight into a new float32 array: pixel / 255, in [0, 1].
        images_t = torch.from_numpy(np.divide(images, np.float32(255.0), dtype=np.float32))
    else:
        images_t = torch.from_numpy(images.copy())  # (N, 1, H, W) uint8, writable copy
    labels_t = torch.from_numpy(labels.astype(np.int64))  # (N,) int64
    return images_t, labels_t


def fashion_mnist_loaders(
    batch_size: int,
    *,
    seed: int,
    limit_train: int | None = None,
    limit_test: int | None = None,
    num_workers: int = 0,
    data_dir: str | os.PathLike | None = None,
):
    """Seeded train and test DataLoaders over Fashion-MNIST (images float32 in [0, 1]).

    The training loader shuffles with its own ``torch.Generator`` seeded by ``seed``, so two runs
    with the same seed see the same batches in the same order, whatever the global RNG does.
    The test loader does not shuffle.

    Args:
        batch_size: examples per batch B.
        seed: seed of the shuffling generator (and of worker processes' seeds).
        limit_train, limit_test: keep only the first so many examples of each split.
        num_workers: DataLoader worker processes (0 = load in the main process).
        data_dir: as in :func:`load_fashion_mnist`.

    Returns:
        (train_loader, test_loader); each batch is ``(images (B, 1, 28, 28) float32,
        labels (B,) int64)``.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    train = TensorDataset(
        *load_fashion_mnist("train", limit=limit_train, data_dir=data_dir)
    )
    test = TensorDataset(
        *load_fashion_mnist("test", limit=limit_test, data_dir=data_dir)
    )
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers
    )
    test_loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader
