"""Tests for bncourse.data: every loader's shapes, dtypes and ranges; the IDX parser; the search
order; and the optional download, against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from bncourse import data

FILES = data.FASHION_MNIST_FILES


# ---------------------------------------------------------------------------------------------
# helpers and fixtures
# ---------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encode a uint8 array as IDX: magic 0x000008NN, big-endian dims, then the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # (N, H, W)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # make sure both ends of the range occur
    labels = (np.arange(n) % 10).astype(np.uint8)  # (N,)
    return images, labels


def write_fake_dataset(directory: Path, n_train: int = 40, n_test: int = 20) -> dict:
    """Write small gzipped IDX files with the official names; return name -> (array, sha256)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        for name, array in zip(FILES[split], fake_split(n, seed)):
            blob = gzip.compress(idx_bytes(array))
            (directory / name).write_bytes(blob)
            out[name] = (array, hashlib.sha256(blob).hexdigest())
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data anywhere: fake Debian dir, fake cache, no env var, cold cache."""
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data.clear_cache()
    yield tmp_path
    data.clear_cache()


# ---------------------------------------------------------------------------------------------
# 1. tabular data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loader, shape, n_classes",
    [(data.load_wine, (178, 13), 3), (data.load_breast_cancer, (569, 30), 2)],
)
def test_tabular_loaders(loader, shape, n_classes):
    X, y, names = loader()
    assert X.shape == shape and X.dtype == np.float64
    assert y.shape == (shape[0],) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(n_classes))
    assert len(names) == shape[1] and all(isinstance(n, str) for n in names)
    assert np.isfinite(X).all()
    col_std = X.std(axis=0)
    assert col_std.max() / col_std.min() > 100, "the point of these sets is wildly different scales"


def test_digits_images():
    images, y = data.load_digits_images()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert images.min() == 0 and images.max() == 16
    assert set(np.unique(y)) == set(range(10))


def test_train_test_split_is_seeded_disjoint_and_complete():
    X = np.arange(100, dtype=np.float64)[:, None] * np.ones((1, 3))  # (N, D), row i holds i
    y = np.arange(100)
    Xtr, Xte, ytr, yte = data.train_test_split(X, y, test_fraction=0.2, seed=3)
    assert Xtr.shape == (80, 3) and Xte.shape == (20, 3) and ytr.shape == (80,) and yte.shape == (20,)
    assert np.array_equal(Xtr[:, 0], ytr) and np.array_equal(Xte[:, 0], yte), "rows stay paired"
    assert sorted(np.concatenate([ytr, yte]).tolist()) == list(range(100))
    again = data.train_test_split(X, y, test_fraction=0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((Xtr, Xte, ytr, yte), again))
    other = data.train_test_split(X, y, test_fraction=0.2, seed=4)
    assert not np.array_equal(yte, other[3])
    # torch tensors work too
    tr = data.train_test_split(torch.from_numpy(X), torch.from_numpy(y), 0.5, seed=0)
    assert tr[0].shape == (50, 3) and isinstance(tr[0], torch.Tensor)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_train_test_split_rejects_bad_fraction(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        data.train_test_split(np.zeros((10, 2)), np.zeros(10), bad, seed=0)


def test_train_test_split_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        data.train_test_split(np.zeros((10, 2)), np.zeros(9), 0.2, seed=0)


# ---------------------------------------------------------------------------------------------
# 2. synthetic data
# ---------------------------------------------------------------------------------------------


def test_stream():
    x, signal = data.make_stream(500, seed=0, noise=0.5)
    assert x.shape == signal.shape == (500,) and x.dtype == np.float64
    residual = x - signal
    assert abs(residual.std() - 0.5) < 0.06
    assert np.array_equal(x, data.make_stream(500, seed=0, noise=0.5)[0])


# ---------------------------------------------------------------------------------------------
# 3a. the IDX parser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_roundtrip(tmp_path, compress):
    images, labels = fake_split(7, seed=0)
    for array, ndim in ((images, 3), (labels, 1)):
        blob = idx_bytes(array)
        path = tmp_path / f"a{ndim}.idx"
        path.write_bytes(gzip.compress(blob) if compress else blob)
        got = data.read_idx(path, expected_ndim=ndim)
        assert got.dtype == np.uint8 and got.shape == array.shape
        assert np.array_equal(got, array)
        assert np.array_equal(data.read_idx(path), array)  # no expected_ndim: any ubyte IDX


def test_read_idx_bad_magic(tmp_path):
    images, _ = fake_split(3, seed=0)
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(images, magic=0x12345678)))
    with pytest.raises(data.IDXFormatError, match=r"bad IDX magic number .*expected 2051"):
        data.read_idx(path, expected_ndim=3)
    with pytest.raises(data.IDXFormatError, match="bad IDX magic number"):
        data.read_idx(path)


def test_read_idx_labels_passed_as_images(tmp_path):
    _, labels = fake_split(3, seed=0)
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(data.IDXFormatError, match="2049.*expected 2051"):
        data.read_idx(path, expected_ndim=3)


def test_read_idx_truncated_data(tmp_path):
    images, _ = fake_split(3, seed=0)
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)[:-100]))
    with pytest.raises(data.IDXFormatError, match=r"truncated: dims \(3, 28, 28\) need 2352"):
        data.read_idx(path, expected_ndim=3)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(data.IDXFormatError, match="truncated"):
        data.read_idx(path, expected_ndim=3)


def test_read_idx_truncated_gzip(tmp_path):
    images, _ = fake_split(3, seed=0)
    blob = gzip.compress(idx_bytes(images))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.IDXFormatError, match="gzip"):
        data.read_idx(path)


def test_corrupt_file_in_data_dir_gives_clear_error(isolated):
    directory = isolated / "corrupt"
    write_fake_dataset(directory)
    name = FILES["test"][0]
    blob = (directory / name).read_bytes()
    (directory / name).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.IDXFormatError, match=name):
        data.load_fashion_mnist("test", data_dir=directory)


# ---------------------------------------------------------------------------------------------
# 3b. Fashion-MNIST from the places searched
# ---------------------------------------------------------------------------------------------

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not all((REAL_DIR / n).is_file() for pair in FILES.values() for n in pair),
    reason=f"real Fashion-MNIST not installed in {REAL_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_debian_dir(monkeypatch):
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", REAL_DIR)
    for name in (n for pair in FILES.values() for n in pair):
        assert hashlib.sha256((REAL_DIR / name).read_bytes()).hexdigest() == data.FASHION_MNIST_SHA256[name]
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_fashion_mnist(split)
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert images.min().item() == 0.0 and images.max().item() == 1.0
        assert torch.bincount(labels).tolist() == [n // 10] * 10  # Fashion-MNIST is balanced
    raw, _ = data.load_fashion_mnist("test", normalize=False, limit=100)
    assert raw.dtype == torch.uint8 and raw.shape == (100, 1, 28, 28)
    torch.testing.assert_close(raw.float() / 255, images[:100], rtol=0, atol=0)
    assert len(data.FASHION_MNIST_CLASSES) == 10


def test_env_var_dir(isolated, monkeypatch):
    files = write_fake_dataset(isolated / "mine", n_train=30, n_test=12)
    monkeypatch.setenv(data.ENV_DIR, str(isolated / "mine"))
    images, labels = data.load_fashion_mnist("train")
    assert images.shape == (30, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (30,) and labels.dtype == torch.int64
    assert 0.0 <= images.min().item() and images.max().item() <= 1.0
    expected = torch.from_numpy(files[FILES["train"][0]][0].astype(np.float32) / 255)[:, None]
    torch.testing.assert_close(images, expected, rtol=0, atol=0)
    assert labels.tolist() == files[FILES["train"][1]][0].tolist()
    images, labels = data.load_fashion_mnist("test", limit=5)
    assert images.shape == (5, 1, 28, 28) and labels.shape == (5,)


def test_env_var_dir_set_but_missing_is_an_error(isolated, monkeypatch):
    # Even with data in the user cache, a wrong explicit choice must not be silently ignored.
    write_fake_dataset(data.fashion_mnist_cache_dir())
    monkeypatch.setenv(data.ENV_DIR, str(isolated / "nowhere"))
    with pytest.raises(data.FashionMNISTNotFoundError, match=r"BNCOURSE_FASHION_MNIST.*nowhere"):
        data.load_fashion_mnist("test")


def test_user_cache_is_searched(isolated):
    write_fake_dataset(isolated / "xdg-cache" / "bncourse" / "fashion-mnist", n_test=9)
    images, labels = data.load_fashion_mnist("test")
    assert images.shape == (9, 1, 28, 28) and labels.shape == (9,)


def test_returned_tensors_do_not_alias_the_cache(isolated):
    write_fake_dataset(isolated / "d")
    a, la = data.load_fashion_mnist("test", data_dir=isolated / "d")
    a.zero_(), la.zero_()
    b, lb = data.load_fashion_mnist("test", data_dir=isolated / "d")
    assert b.max() > 0 and lb.max() > 0


def test_loaders_are_seeded(isolated):
    write_fake_dataset(isolated / "d", n_train=50, n_test=20)

    def first_epoch(seed):
        train, test = data.fashion_mnist_loaders(8, seed=seed, data_dir=isolated / "d")
        return [lbl.tolist() for _, lbl in train], train, test

    epoch_a, train, test = first_epoch(0)
    epoch_b, _, _ = first_epoch(0)
    torch.manual_seed(123)  # the global RNG must not matter
    epoch_c, _, _ = first_epoch(1)
    assert epoch_a == epoch_b and epoch_a != epoch_c
    images, labels = next(iter(train))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert sum(len(b) for b in epoch_a) == 50
    assert [lbl.tolist() for _, lbl in test] == [lbl.tolist() for _, lbl in test]  # test not shuffled
    train, test = data.fashion_mnist_loaders(4, seed=0, limit_train=10, limit_test=6, data_dir=isolated / "d")
    assert len(train.dataset) == 10 and len(test.dataset) == 6


def test_nothing_found_names_every_way_to_get_the_data(isolated):
    with pytest.raises(data.FashionMNISTNotFoundError) as info:
        data.load_fashion_mnist("train")
    message = str(info.value)
    for needle in (
        "apt-get install dataset-fashion-mnist",
        "BNCOURSE_FASHION_MNIST",
        "bncourse get-data fashion-mnist",
        str(isolated / "no-debian"),
        str(isolated / "xdg-cache" / "bncourse" / "fashion-mnist"),
    ):
        assert needle in message
