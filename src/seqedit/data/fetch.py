"""Download a benchmark file once, checked against its sha256 (urllib only).

`fetch(url, dest, sha256)` keeps an existing `dest` (checked, never downloaded again);
otherwise it streams `url` into `dest.part` with a progress bar, checks size and digest,
and only then renames it to `dest`. Any failure removes the partial file and raises one
line naming the URL and the file: `FetchError` (an OSError) when the download fails,
ValueError on a checksum mismatch.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

_CHUNK = 1 << 20


class FetchError(OSError):
    """A download failed (unreachable host, HTTP error, truncated transfer)."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(err: BaseException) -> str:
    reason = getattr(err, "reason", None) if isinstance(err, urllib.error.URLError) else None
    text = str(reason if reason is not None and not isinstance(err, urllib.error.HTTPError) else err)
    return " ".join(text.split()) or type(err).__name__


def fetch(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """`dest`, downloaded from `url` unless it exists, and matching `sha256` when given."""
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        if expected and (got := sha256_of(dest)) != expected:
            raise ValueError(f"{dest}: sha256 is {got}, expected {expected}; delete the file to download it again")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=dest.name, disable=not progress, mininterval=1.0) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        if total is not None and size != total:
            raise FetchError(f"transfer ended after {size} of {total} bytes")
    except (OSError, http.client.HTTPException, ValueError) as err:
        part.unlink(missing_ok=True)
        raise FetchError(f"could not download {url} to {dest}: {_one_line(err)}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if expected and digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise ValueError(f"{url}: sha256 of the download is {digest.hexdigest()}, expected {expected}; "
                         f"the partial file was removed and {dest} not written")
    os.replace(part, dest)
    return dest
