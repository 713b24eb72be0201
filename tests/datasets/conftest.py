import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The writers of the fuzz corpus's small files (tests/fuzz/make_corpus.py) build test inputs here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))


class _Recorder(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def github_server(tmp_path, monkeypatch):
    """A local stand-in for raw.githubusercontent.com: ``<site>/<owner>/<repo>/<commit>/<path>``.

    ``serve(remote, data)`` publishes bytes under a source's path; ``requests`` lists the paths
    asked for; ``SPATIALFACTORS_DATA`` points at an empty ``cache`` folder.
    """
    site = tmp_path / "site"
    site.mkdir()
    handler = type("Handler", (_Recorder,), {"requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPATIALFACTORS_DATA", str(cache))

    def serve(remote, data: bytes):
        target = site / remote.repo / remote.commit / remote.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    yield {
        "url": f"http://127.0.0.1:{httpd.server_address[1]}",
        "serve": serve,
        "requests": handler.requests,
        "cache": cache,
    }
    httpd.shutdown()
    httpd.server_close()
