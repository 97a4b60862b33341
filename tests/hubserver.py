"""A loopback weights server for tests: a Hugging Face hub and a torchvision-style file mirror.

It serves files the tests write themselves, on 127.0.0.1 and an ephemeral port, and stops with
its context. Hub paths are ``/{owner}/{repo}/resolve/{revision}/{filename}`` (what
``huggingface_hub.hf_hub_download`` asks for, with the metadata headers it reads: the repo
commit, an ETag and the size); every other path is a plain file under ``root/files``, as a
mirror of ``download.pytorch.org`` holds them. HEAD, GET and ``Range: bytes=N-`` (resumed
downloads) are answered; everything asked is recorded in ``requests`` so a test can check
that an offline run asked nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Hub:
    root: Path  # root/hub/<owner>/<repo>/<file>, root/files/<path>
    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    cut_after: int | None = None  # GET bodies stop after this many bytes (a dropped connection)

    def add_hub_file(self, repo: str, filename: str, data: bytes) -> None:
        path = self.root / "hub" / repo / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def add_file(self, rel: str, data: bytes) -> str:
        path = self.root / "files" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{rel}"


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _locate(self) -> tuple[Path | None, bool]:
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) >= 5 and parts[2] == "resolve":
                return hub.root / "hub" / parts[0] / parts[1] / "/".join(parts[4:]), True
            return hub.root / "files" / "/".join(parts), False

        def _answer(self, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            path, is_hub = self._locate()
            if path is None or not path.is_file():
                self.send_response(404)
                if is_hub:
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "Entry not found")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and body:
                start = int(rng[len("bytes="):].split("-")[0] or 0)
            self.send_response(206 if start else 200)
            if is_hub:
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                chunk = data[start:]
                if hub.cut_after is not None:
                    chunk = chunk[:hub.cut_after]
                self.wfile.write(chunk)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(body=True)

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[Hub]:
    hub = Hub(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
