"""A scripted OpenAI-compatible chat server on 127.0.0.1 for fault tests (429s, 400s, slow replies).

The behaviour is chosen by the last user text: ``RATE`` answers 429 once then 200, ``WAIT`` answers 429 with
``Retry-After: 1`` once then 200, ``FLAKY`` answers 503 twice, ``BAD`` answers 400, ``SLOW`` waits 0.2 s; anything
else answers at once, with ``echo i: <text>``, or with what ``replies`` gives: scripted (content, finish_reason) pairs
handed out in arrival order, or the ``n`` contents ``choices(body, n)`` returns (different choices per request).
``fail_arrivals``: the arrival numbers (1-based, over every request) answered 503 (an
outage); ``garbled_arrivals``: answered 200 with a body that is not JSON (a broken proxy); ``die_after``: the server
stops listening once it has answered that many requests (killed mid-run; ``port`` starts a new one on the same port).
``keep_alive``: HTTP/1.1, a connection serves request after request (default HTTP/1.0: one connection per request,
so a killed server refuses every later one). It records every body, when each text arrived, the most requests it
ever had in flight and the TCP connections it accepted.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, replies: list[tuple[str, str]] | None = None, *, fail_arrivals: set[int] = frozenset(),
                 garbled_arrivals: set[int] = frozenset(), die_after: int | None = None, port: int = 0,
                 keep_alive: bool = False, choices=None) -> None:
        self.replies = list(replies or [])
        self.choices = choices
        self.fail_arrivals, self.garbled_arrivals, self.die_after = set(fail_arrivals), set(garbled_arrivals), die_after
        self.answered = 0
        self.bodies: list[dict] = []
        self.calls: dict[str, int] = {}
        self.arrived: dict[str, list[float]] = {}  # text -> time.monotonic() of each arrival
        self.connections = 0  # TCP connections accepted
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = keep_alive  # headers and body go out in two writes: no delayed-ACK wait

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                with server.lock:
                    server.connections += 1

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    arrival = len(server.bodies)
                    gone = server.die_after is not None and server.answered >= server.die_after
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if gone:  # a request that reached a dying server: the connection drops without an answer
                    with server.lock:
                        server.in_flight -= 1
                    self.close_connection = True
                    return
                if arrival in server.garbled_arrivals:
                    with server.lock:
                        server.in_flight -= 1
                    data = b"<html>502 Bad Gateway</html>"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if arrival in server.fail_arrivals:
                    with server.lock:
                        server.in_flight -= 1
                    return self._send(503, {"error": {"message": "engine restarting"}})
                try:
                    self._answer(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        server.answered += 1
                        die = server.die_after is not None and server.answered == server.die_after
                    if die:
                        threading.Thread(target=server.kill, daemon=True).start()

            def _answer(self, body):
                text = _last_user_text(body["messages"])
                with server.lock:
                    count = server.calls[text] = server.calls.get(text, 0) + 1
                    server.arrived.setdefault(text, []).append(time.monotonic())
                if "RATE" in text and count == 1:
                    return self._send(429, {"error": {"message": "rate limited"}})
                if "WAIT" in text and count == 1:
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                if "FLAKY" in text and count <= 2:
                    return self._send(503, {"error": {"message": "overloaded"}})
                if "BAD" in text:
                    return self._send(400, {"error": {"message": "prompt is too long for this model"}})
                if "SLOW" in text:
                    time.sleep(0.2)
                n = body.get("n", 1)
                if server.choices is not None:
                    choices = [{"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                               for i, c in enumerate(server.choices(body, n))]
                    return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3 * n}})
                if server.replies:
                    with server.lock:
                        content, reason = server.replies[(len(server.bodies) - 1) % len(server.replies)]
                    choices = [{"index": i, "message": {"role": "assistant", "content": content},
                                "finish_reason": reason} for i in range(n)]
                    return self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
                choices = [{"index": i, "message": {"role": "assistant", "content": f"echo {i}: {text}"},
                            "finish_reason": "stop"} for i in range(n)]
                self._send(200, {"choices": choices, "usage": {"prompt_tokens": 5, "completion_tokens": 3 * n}})

            def _send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def kill(self) -> None:
        """Stop listening: new connections are refused (HTTP/1.0: every request opens its own; with ``keep_alive``
        an open connection is still served)."""
        with self.lock:
            if getattr(self, "_killed", False):
                return
            self._killed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.kill()


def _last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            c = m["content"]
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
    return ""
