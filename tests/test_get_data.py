"""bncourse get-data: checksummed download into the place the loader searches (file:// URLs, no network)."""
from __future__ import annotations

import hashlib

import pytest
import torch

from bncourse import data, get_data
from bncourse.cli import main
from test_data import FILES, write_fake_dataset


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Small fake Fashion-MNIST files behind a file:// URL; an empty user cache; no real data."""
    monkeypatch.delenv(data.ENV_DIR, raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    files = write_fake_dataset(tmp_path / "served")
    data.clear_cache()
    yield {"url": (tmp_path / "served").as_uri() + "/", "files": files,
           "checksums": {name: sha for name, (_, sha) in files.items()},
           "cache": tmp_path / "xdg-cache" / "bncourse" / "fashion-mnist"}
    data.clear_cache()


def test_download_lands_in_the_user_cache_where_the_loader_finds_it(served):
    with pytest.raises(data.FashionMNISTNotFoundError, match="bncourse get-data fashion-mnist"):
        data.load_fashion_mnist("test")
    where = get_data.get_fashion_mnist(base_url=served["url"], checksums=served["checksums"], progress=False)
    assert where == served["cache"]
    assert sorted(p.name for p in where.iterdir()) == sorted(served["checksums"]), "no leftover .part files"
    images, labels = data.load_fashion_mnist("test")
    assert images.shape == (20, 1, 28, 28) and labels.dtype == torch.int64
    assert labels.tolist() == served["files"][FILES["test"][1]][0].tolist()


def test_files_already_verified_are_not_fetched_again(served, monkeypatch):
    get_data.get_fashion_mnist(base_url=served["url"], checksums=served["checksums"], progress=False)
    fetched = []
    real = get_data._download_one
    monkeypatch.setattr(get_data, "_download_one", lambda url, *a, **k: (fetched.append(url), real(url, *a, **k)))
    victim = served["cache"] / FILES["train"][0]
    victim.write_bytes(b"damaged")                                   # a damaged file is fetched again
    get_data.get_fashion_mnist(base_url=served["url"], checksums=served["checksums"], progress=False)
    assert fetched == [served["url"] + FILES["train"][0]]
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == served["checksums"][FILES["train"][0]]


def test_checksum_mismatch_keeps_nothing(served, tmp_path):
    bad = dict(served["checksums"])
    name = FILES["train"][0]
    bad[name] = "0" * 64
    with pytest.raises(get_data.ChecksumError) as info:
        get_data.get_fashion_mnist(tmp_path / "dest", base_url=served["url"], checksums=bad, progress=False)
    assert name in str(info.value) and served["checksums"][name] in str(info.value)
    assert name not in [p.name for p in (tmp_path / "dest").iterdir()]
    assert not any(p.name.endswith(".part") for p in (tmp_path / "dest").iterdir())


def test_a_file_without_a_checksum_is_refused_before_any_download(served, tmp_path):
    with pytest.raises(ValueError, match="unverified"):
        get_data.get_fashion_mnist(tmp_path / "dest", base_url=served["url"], checksums={}, progress=False)
    assert not (tmp_path / "dest").exists()


def test_the_command_downloads_to_dest_and_says_how_to_use_it(served, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(get_data, "FASHION_MNIST_SHA256", served["checksums"])   # the fake files' hashes
    dest = tmp_path / "mine"
    assert main(["get-data", "fashion-mnist", "--dest", str(dest), "--url", served["url"]]) == 0
    assert f"export BNCOURSE_FASHION_MNIST={dest.resolve()}" in capsys.readouterr().out
    monkeypatch.setenv(data.ENV_DIR, str(dest))
    images, _ = data.load_fashion_mnist("train")
    assert images.shape == (40, 1, 28, 28)


def test_the_command_explains_a_failed_download(served, tmp_path, capsys):
    code = main(["get-data", "fashion-mnist", "--dest", str(tmp_path / "d"), "--url", served["url"] + "missing/"])
    err = capsys.readouterr().err
    assert code == 1 and "download" in err and "apt-get install dataset-fashion-mnist" in err
    assert not any(p.suffix == ".gz" for p in (tmp_path / "d").glob("*"))


@pytest.fixture
def http_server(served):
    """The fake files behind a real HTTP server on 127.0.0.1 (a thread; nothing listens beyond loopback)."""
    import functools
    import http.server
    import threading
    from pathlib import Path
    from urllib.parse import urlparse
    root = Path(urlparse(served["url"]).path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None                                   # quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_command_downloads_over_http_from_a_local_server(served, http_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(get_data, "FASHION_MNIST_SHA256", served["checksums"])
    dest = tmp_path / "over-http"
    assert main(["get-data", "fashion-mnist", "--dest", str(dest), "--url", http_server]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(served["checksums"])
    monkeypatch.setenv(data.ENV_DIR, str(dest))
    assert data.load_fashion_mnist("test")[0].shape == (20, 1, 28, 28)


def test_offline_the_command_fails_with_a_clear_error_and_keeps_nothing(tmp_path, capsys):
    import socket
    with socket.socket() as s:                                   # a loopback port nobody listens on: "offline"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "offline"
    code = main(["get-data", "fashion-mnist", "--dest", str(dest), "--url", f"http://127.0.0.1:{port}/"])
    err = capsys.readouterr().err
    assert code == 1
    assert "download" in err and "apt-get install dataset-fashion-mnist" in err and "BNCOURSE_FASHION_MNIST" in err
    assert "Traceback" not in err
    assert not list(dest.glob("*.gz")) and not list(dest.glob("*.part")), "nothing half-downloaded is left"
