"""Downloads of benchmark files, against a local HTTP server in a thread."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from seqedit.cli import main
from seqedit.data.fetch import FetchError, fetch

PAYLOAD = b'[{"case_id": 0}]\n' * 5000  # several chunks of the progress bar's unit


class _Handler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path == "/data.json":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.json":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """Base URL of a local server; its handler's `requests` lists the paths asked for."""
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _closed_port_url() -> str:
    """A URL on a port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.json"


def test_download_checked_and_written(server, tmp_path):
    dest = fetch(f"{server}/data.json", tmp_path / "sub" / "data.json", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.json.part").exists()


def test_existing_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.json"
    fetch(f"{server}/data.json", dest, SHA, progress=False)
    fetch(f"{server}/data.json", dest, SHA, progress=False)
    assert _Handler.requests == ["/data.json"]
    local = tmp_path / "local.json"
    local.write_bytes(PAYLOAD)
    fetch(f"{server}/data.json", local, SHA, progress=False)
    assert _Handler.requests == ["/data.json"]


def test_existing_file_with_another_digest_fails(tmp_path):
    local = tmp_path / "local.json"
    local.write_bytes(b"[]")
    with pytest.raises(ValueError, match="local.json: sha256 is .*delete the file to download it again"):
        fetch("http://127.0.0.1:9/never-asked.json", local, SHA, progress=False)


def test_checksum_mismatch_removes_the_partial_file(server, tmp_path):
    dest = tmp_path / "data.json"
    with pytest.raises(ValueError, match=f"/data.json: sha256 of the download is {SHA}, expected 0+;"):
        fetch(f"{server}/data.json", dest, "0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path, reason", [("/missing.json", "HTTP Error 404"),
                                          ("/truncated.json", "transfer ended after 1000 of")])
def test_http_error_and_truncated_transfer(server, tmp_path, path, reason):
    with pytest.raises(FetchError, match=reason) as err:
        fetch(f"{server}{path}", tmp_path / "data.json", SHA, progress=False)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_is_one_line(tmp_path):
    url = _closed_port_url()
    with pytest.raises(FetchError) as err:
        fetch(url, tmp_path / "data.json", SHA, progress=False, timeout=5)
    message = str(err.value)
    assert message.startswith(f"could not download {url} to {tmp_path / 'data.json'}: ")
    assert "\n" not in message
    assert not (tmp_path / "data.json").exists()


def _cli_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["fetch", "--quiet", *argv])
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_offline_without_local_copy_names_the_file_to_place(capsys, tmp_path):
    out, place = tmp_path / "download" / "cf.json", "../shared/data/counterfact/cf.json"
    line = _cli_error(capsys, "--out", str(out), "--place", place, "--url", _closed_port_url(),
                      "--sha256", SHA)
    assert line.startswith("seqedit fetch: error: could not download ")
    assert line.endswith(f"; place the file at {place} instead")


def test_cli_without_url_names_the_file_and_the_setting(capsys, tmp_path):
    line = _cli_error(capsys, "--out", str(tmp_path / "cf.json"), "--place", "../shared/cf.json",
                      "--url-setting", "data.counterfact_url")
    assert line == ("seqedit fetch: error: ../shared/cf.json is missing and no URL is configured "
                    "(data.counterfact_url): place the file there")


def test_cli_downloads(server, tmp_path, capsys):
    main(["fetch", "--quiet", "--out", str(tmp_path / "cf.json"), "--url", f"{server}/data.json", "--sha256", SHA])
    assert Path(tmp_path / "cf.json").read_bytes() == PAYLOAD
