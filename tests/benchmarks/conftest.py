"""Fixtures for the evaluation tests: the reference fixtures (tests/fixtures/) and a local judge endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Real-format excerpts of the reference benchmarks' files with the reference scorers' outputs,
# kept in the repository so a clone alone passes its tests (sources in tests/fixtures/README.md).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


class JudgeServer:
    """An OpenAI-compatible /chat/completions endpoint on 127.0.0.1 whose replies come from
    `reply(request_json) -> str`; it records every request (body and headers)."""

    def __init__(self, reply: Callable[[dict], str]):
        self.reply = reply
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": server.reply(body)}}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge_server():
    servers = []

    def start(reply: Callable[[dict], str]) -> JudgeServer:
        servers.append(JudgeServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
