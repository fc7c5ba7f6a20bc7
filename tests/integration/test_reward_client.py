"""The reward client's connections over real HTTP on 127.0.0.1: one keep-alive pool per client (and per
``RemoteQAScorer``) serves every call, from threads and from event loops, and is closed with it."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from caprl_kit.rewards.client import RemoteQAScorer, RewardClient
from caprl_kit.rewards.config import RewardServiceConfig
from caprl_kit.schemas.curate import MCQ


class RewardStandIn:
    """An HTTP/1.1 stand-in for ``caprl serve-reward``: every caption of ``POST /v1/reward`` scores 1, ``POST
    /get_reward`` answers the official shape; it counts the requests and the TCP connections it accepted."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                with lock:
                    server.connections += 1

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    server.requests += 1
                if self.path == "/v1/reward":
                    details = [{"qa_rewards": 1.0, "n_questions": len(gt), "correct": [1] * len(gt),
                                "predicted": ["A"] * len(gt), "cannot_answer": [0] * len(gt)}
                               for gt in body["ground_truth"]]
                    payload = {"details": details}
                else:
                    payload = {"rewards": [1.0] * len(body["prompts"])}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RewardStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


QA = MCQ(question="What color is the circle?", choices=["A) red", "B) blue"], answer="A")


def test_a_remote_scorer_reuses_one_connection_pool_across_calls() -> None:
    with RewardStandIn() as server:
        scorer = RemoteQAScorer(RewardServiceConfig(urls=[server.url], max_captions_per_request=1))
        pool = scorer.client.http
        for _ in range(6):  # 3 captions a call, one request each, sent concurrently (3 threads)
            out = scorer.score(["a", "b", "c"], [[QA], [QA], [QA]])
            assert out.scores == [1.0, 1.0, 1.0]
        assert scorer.client.http is pool
        scorer.close()
    assert server.requests == 18
    assert server.connections <= 3, f"{server.connections} connections for 18 requests, at most 3 at a time"
    assert scorer.client.closed and pool.is_closed
    with pytest.raises(RuntimeError):  # a closed client's pool sends nothing
        scorer.client.post("/v1/reward", {"captions": [], "ground_truth": []})


def test_apost_from_several_event_loops_shares_the_pool() -> None:
    body = {"prompts": [["a caption", [["q", "A"]]]], "query": [], "labels": []}
    with RewardStandIn() as server, RewardClient(server.url) as client:
        for _ in range(4):  # a new loop per round, as a caller that runs asyncio.run per batch
            async def round_() -> list[dict]:
                return list(await asyncio.gather(*(client.apost("/get_reward", body) for _ in range(2))))

            assert [r["rewards"] for r in asyncio.run(round_())] == [[1.0], [1.0]]
    assert server.requests == 8 and server.connections <= 2
