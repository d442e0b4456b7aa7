"""``bncourse get-data fashion-mnist``: the one place where the course touches the network.

Nothing in the chapters downloads: :func:`bncourse.data.load_fashion_mnist` only looks on disk, and
when it finds nothing its error names this command. The command fetches the four gzipped IDX
files into the user cache (``~/.cache/bncourse/fashion-mnist``, one of the places the loader
searches) or into ``--dest``, and checks each against its SHA-256 before it is moved into place::

    bncourse get-data fashion-mnist                 # into the user cache
    bncourse get-data fashion-mnist --dest DIR      # then: export BNCOURSE_FASHION_MNIST=DIR

Files already present with the right checksum are not fetched again. A download goes to a
temporary file next to its target and is renamed only once its checksum matched, so a reader
never sees half a file and a failed download leaves nothing behind.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from .data import FASHION_MNIST_FILES, FASHION_MNIST_SHA256, fashion_mnist_cache_dir

__all__ = ["DEFAULT_FASHION_MNIST_URL", "ChecksumError", "get_fashion_mnist", "add_get_data_parser"]

#: Zalando's official mirror. Plain http, which is why every file is checked by SHA-256.
#: (The same files are also at https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/.)
DEFAULT_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 differs from the expected one (the file was not kept)."""


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_one(url: str, dest: Path, sha256: str, timeout: float, progress: bool) -> None:
    """Fetch ``url`` into a temporary file next to ``dest``, check its SHA-256, rename into place."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        got = digest.hexdigest()
        if got != sha256.lower():
            raise ChecksumError(f"checksum mismatch for {dest.name} from {url}: expected SHA-256 {sha256.lower()}, "
                                f"got {got}. Nothing was kept.")
        os.replace(tmp, dest)                       # atomic on one file system
    finally:
        tmp.unlink(missing_ok=True)


def get_fashion_mnist(dest: str | os.PathLike | None = None, *, base_url: str = DEFAULT_FASHION_MNIST_URL,
                      checksums: Mapping[str, str] | None = None, timeout: float = 30.0,
                      progress: bool = True) -> Path:
    """Download the four Fashion-MNIST files into ``dest`` (default: the user cache), each checked by SHA-256.

    Args:
        dest: target directory; default :func:`bncourse.data.fashion_mnist_cache_dir`.
        base_url: where the files live; the file name is appended.
        checksums: file name -> SHA-256 hex; default :data:`bncourse.data.FASHION_MNIST_SHA256`. A file
            without an entry is refused before anything is fetched.
        timeout: seconds for connecting and for each read.
        progress: a progress bar per file.

    Returns:
        The directory that now holds the files.

    Raises:
        ChecksumError: a file's hash differs (nothing of it is kept).
        urllib.error.URLError, OSError, TimeoutError: the server could not be reached.
    """
    target_dir = Path(dest) if dest is not None else fashion_mnist_cache_dir()
    checksums = FASHION_MNIST_SHA256 if checksums is None else checksums
    base = base_url if base_url.endswith("/") else base_url + "/"
    names = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    unverified = [name for name in names if name not in checksums]
    if unverified:
        raise ValueError(f"no SHA-256 given for {', '.join(unverified)}; refusing to download unverified files")
    for name in names:
        target = target_dir / name
        if target.is_file() and sha256_of(target) == checksums[name].lower():
            continue
        _download_one(base + name, target, checksums[name], timeout, progress)
    return target_dir


def _get_data(args: argparse.Namespace) -> int:
    try:
        where = get_fashion_mnist(args.dest, base_url=args.url, timeout=args.timeout)
    except ChecksumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"error: the download from {args.url} failed: {reason}. Other ways to get the data: "
              "sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or copy the four .gz files into a "
              "directory and set BNCOURSE_FASHION_MNIST to it.", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST is in {where} (all four files match their SHA-256)")
    if args.dest is not None:
        print(f"the course finds it there with: export BNCOURSE_FASHION_MNIST={Path(args.dest).resolve()}")
    return 0


def add_get_data_parser(sub) -> None:
    """Add ``get-data`` to the ``bncourse`` command's subparsers."""
    p = sub.add_parser("get-data", help="download a dataset the course uses (checked by SHA-256)")
    p.add_argument("dataset", choices=["fashion-mnist"])
    p.add_argument("--dest", default=None, help="directory to put the files in (default: the user cache, "
                                                 "~/.cache/bncourse/fashion-mnist, where the course looks)")
    p.add_argument("--url", default=DEFAULT_FASHION_MNIST_URL, help="base URL of the files")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per connection and read")
    p.set_defaults(func=_get_data)
