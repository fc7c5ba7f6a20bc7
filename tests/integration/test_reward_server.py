"""The reward server over real HTTP on 127.0.0.1: official bodies, concurrency, every bad-request kind, injected
engine faults (503, never zeros), auth, metrics; the client's failover; the CLI process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from caprl_kit.backends import build_backend
from caprl_kit.backends.base import BackendBase
from caprl_kit.backends.config import BackendConfig
from caprl_kit.rewards.base import RewardError
from caprl_kit.rewards.client import RewardClient
from caprl_kit.rewards.server import RewardServerConfig
from caprl_kit.rewards.server_app import create_app
from uvicorn_thread import serve

CIRCLE_Q = "What color is the circle?\n   - A) red\n   - B) blue\n   - C) green\n   - D) yellow"
SQUARE_Q = "What color is the square?\n   - A) red\n   - B) blue\n   - C) green\n   - D) yellow"
FULL = "A red circle at the left and a blue square at the right."
HALF = "A red circle at the left."
# nine choices: no label is left for the cannot-answer option the reward appends (A-I are the labels)
NINE = [f"{x}) shade {i}" for i, x in enumerate("ABCDEFGHI")]
NINE_Q = "What shade is the circle?" + "".join(f"\n   - {c}" for c in NINE)
# the official request body layout, as in spec §2.6
OFFICIAL_BODY = {"prompts": [[FULL, [[CIRCLE_Q, "A"], [SQUARE_Q, "B"]]], [HALF, [[SQUARE_Q, "B"]]]],
                 "query": [], "labels": []}


def cfg(**kw) -> RewardServerConfig:
    return RewardServerConfig.model_validate({"qa": {"seed": 0, "answerer": {"name": "lexical"}}, **kw})


class FaultyEngine(BackendBase):
    """Injects what a real engine cannot be made to do on demand: fail mid-call (streamed like every engine)."""

    def __init__(self) -> None:
        super().__init__(BackendConfig(name="lexical"))
        self.model_id = "faulty"

    def generate(self, requests):
        raise RuntimeError("CUDA error: out of memory (injected)")


def test_official_body_gets_an_official_answer() -> None:
    with serve(create_app(cfg())) as url:
        r = httpx.post(f"{url}/get_reward", json=OFFICIAL_BODY)
    assert r.status_code == 200
    assert r.json() == {"rewards": [1.0, 0.0], "qa_rewards": [1.0, 0.0]}


def test_video_task_adds_the_format_term() -> None:
    body = {"prompts": [["[00:00] A red circle at the left.", [[CIRCLE_Q, "A"]]], [HALF, [[CIRCLE_Q, "A"]]]],
            "query": [], "labels": []}
    with serve(create_app(cfg(qa={"seed": 0, "task": "video", "answerer": {"name": "lexical"}}))) as url:
        data = httpx.post(f"{url}/get_reward", json=body).json()
    assert data["qa_rewards"] == [1.0, 1.0] and data["format_rewards"] == [1.0, 0.0]
    assert data["rewards"] == pytest.approx([1.2, 1.0])


def test_typed_endpoint_health_and_metrics() -> None:
    body = {"captions": [FULL], "ground_truth": [[{"question": "What color is the square?",
                                                   "choices": ["A) red", "B) blue"], "answer": "B"}]]}
    with serve(create_app(cfg())) as url:
        r = httpx.post(f"{url}/v1/reward", json=body)
        health = httpx.get(f"{url}/health").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert r.status_code == 200 and r.json()["rewards"] == [1.0]
    assert r.json()["details"][0]["qa_rewards"] == 1.0
    assert health == {"status": "ok", "answerer": "lexical", "task": "image", "score_modes": ["qa"],
                      "empty_qa": "refuse", "empty_qa_captions": 0}
    assert 'caprl_reward_requests_total{code="200",endpoint="v1_reward"} 1.0' in metrics
    assert "caprl_reward_in_flight_prompts 0.0" in metrics and "caprl_reward_latency_seconds" in metrics


def test_200_concurrent_requests_all_answered_and_batched() -> None:
    app = create_app(cfg())

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:
            bodies = [{"prompts": [[FULL if i % 2 else HALF, [[SQUARE_Q, "B"]]]], "query": [], "labels": []}
                      for i in range(200)]
            return await asyncio.gather(*(client.post(f"{url}/get_reward", json=b) for b in bodies))

    with serve(app) as url:
        responses = asyncio.run(fire(url))
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["rewards"] for r in responses] == [[1.0] if i % 2 else [0.0] for i in range(200)]
    assert sum(app.state.scorer.scored) == 200  # every caption scored exactly once
    assert app.state.scorer.meter.peak > 1  # concurrent requests shared the engine


@pytest.mark.parametrize("name, send, code, message", [
    ("bad json", lambda c, u: c.post(f"{u}/get_reward", content=b"{not json", headers={"content-type": "application/json"}),
     400, "not valid JSON"),
    ("missing prompts", lambda c, u: c.post(f"{u}/get_reward", json={"query": []}), 422, "prompts"),
    ("bad entry", lambda c, u: c.post(f"{u}/get_reward", json={"prompts": [["only caption"]]}), 422, "prompts[0]"),
    ("no options", lambda c, u: c.post(f"{u}/get_reward", json={"prompts": [[FULL, [["Q without options", "A"]]]]}),
     422, "no '- A) ...' option lines"),
    ("answer not an option", lambda c, u: c.post(f"{u}/get_reward", json={"prompts": [[FULL, [[CIRCLE_Q, "G"]]]]}),
     422, "prompts[0].qa[0]: answer 'G' is not one of the labels A, B, C, D"),
    ("vl_judge not served", lambda c, u: c.post(f"{u}/get_reward", json={**OFFICIAL_BODY, "score_mode": "vl_judge"}),
     422, "score_mode 'vl_judge' is not served here; this server serves 'qa' (or leave score_mode out)"),
    ("typed length mismatch", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": ["a", "b"], "ground_truth": [[]]}),
     422, "same length"),
    ("official caption not a string", lambda c, u: c.post(f"{u}/get_reward", json={"prompts": [[3, [[CIRCLE_Q, "A"]]]]}),
     422, "prompts[0] caption must be a string"),
    ("typed caption not a string", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": [None], "ground_truth": [[
        {"question": "Q", "choices": ["A) x", "B) y"], "answer": "A"}]]}), 422, "captions[0] must be a string"),
    ("typed MCQ not an object", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": ["a"], "ground_truth": [["Q"]]}),
     422, "ground_truth[0][0]: expected a {question, choices, answer} object"),
    ("typed empty question", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": ["a"], "ground_truth": [[
        {"question": " ", "choices": ["A) x", "B) y"], "answer": "A"}]]}), 422, "ground_truth[0][0]: empty question"),
    ("typed one choice", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": ["a"], "ground_truth": [[
        {"question": "Q", "choices": ["A) x"], "answer": "A"}]]}), 422, "needs at least 2 choices"),
    ("too large", lambda c, u: c.post(f"{u}/get_reward", content=b"x" * 5000), 413, "body over 4096 bytes"),
    # a 9-choice MCQ passed the validator and then crashed the scorer (IndexError -> 500): now the request's own 422
    ("typed nine choices", lambda c, u: c.post(f"{u}/v1/reward", json={"captions": [FULL], "ground_truth": [[
        {"question": "What shade is the circle?", "choices": NINE, "answer": "A"}]]}), 422,
     "ground_truth[0][0]: 9 choices, at most 8"),
    ("official nine choices", lambda c, u: c.post(f"{u}/get_reward", json={"prompts": [[FULL, [[NINE_Q, "A"]]]]}),
     422, "prompts[0].qa[0]: 9 choices, at most 8"),
])
def test_bad_requests_get_the_right_4xx(name, send, code, message) -> None:
    with serve(create_app(cfg(max_body_bytes=4096))) as url, httpx.Client() as client:
        r = send(client, url)
    assert r.status_code == code, r.text
    assert message in r.json()["error"]


# the official vl_judge body carries no prompts: the mode is refused before the body's shape is checked; any
# unknown mode or wrong shape is one line, never pydantic's multi-line dump
@pytest.mark.parametrize("body, message", [
    ({"score_mode": "vl_judge", "samples": [{"caption": FULL, "video_path": "v.mp4"}]},
     "score_mode 'vl_judge' is not served here; this server serves 'qa' (or leave score_mode out)"),
    ({**OFFICIAL_BODY, "score_mode": "judge"},
     "score_mode 'judge' is not served here; this server serves 'qa' (or leave score_mode out)"),
    ({**OFFICIAL_BODY, "score_mode": 3}, "score_mode 3 is not served here; this server serves 'qa' (or leave score_mode out)"),
    ({"query": []}, "prompts: Field required"),
    ([OFFICIAL_BODY], "body: Input should be a valid dictionary or instance of RewardRequest"),
])
def test_an_unserved_score_mode_or_a_bad_shape_is_one_line(body, message: str) -> None:
    with serve(create_app(cfg())) as url:
        r = httpx.post(f"{url}/get_reward", json=body)
    assert r.status_code == 422
    assert r.json() == {"error": message}


def test_engine_fault_is_a_503_not_zeros() -> None:
    app = create_app(cfg(), engine=FaultyEngine())
    with serve(app) as url:
        r = httpx.post(f"{url}/get_reward", json=OFFICIAL_BODY)
        metrics = httpx.get(f"{url}/metrics").text
    assert r.status_code == 503
    assert "out of memory" in r.json()["error"] and "rewards" not in r.json()
    assert "caprl_reward_engine_errors_total 1.0" in metrics


def test_token_required_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPRL_TEST_TOKEN", "s3cret")
    with serve(create_app(cfg(token_env="CAPRL_TEST_TOKEN"))) as url:
        none = httpx.post(f"{url}/get_reward", json=OFFICIAL_BODY)
        wrong = httpx.post(f"{url}/get_reward", json=OFFICIAL_BODY, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{url}/get_reward", json=OFFICIAL_BODY, headers={"Authorization": "Bearer s3cret"})
    assert none.status_code == 401 and wrong.status_code == 401 and right.status_code == 200


def test_client_round_robin_and_failover() -> None:
    with serve(create_app(cfg())) as good, serve(create_app(cfg(), engine=FaultyEngine())) as bad:
        client = RewardClient(["http://127.0.0.1:9", bad, good])  # dead, failing, healthy
        for _ in range(3):  # whichever replica the round-robin starts at, the healthy one answers
            assert client.post("/get_reward", OFFICIAL_BODY)["rewards"] == [1.0, 0.0]
        with pytest.raises(RewardError, match="HTTP 422"):
            client.post("/get_reward", {"prompts": [["x"]]})
        with pytest.raises(RewardError, match="every reward server failed"):
            RewardClient(["http://127.0.0.1:9", bad]).post("/get_reward", OFFICIAL_BODY)


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "rm.yaml"
    conf.write_text(json.dumps({"kind": "serve_reward", "qa": {"answerer": {"name": "lexical"}, "seed": 0}}))
    proc = subprocess.Popen([sys.executable, "-m", "caprl_kit", "serve-reward", "-c", str(conf), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(proc.stdout.read() if proc.poll() is not None else "no health")
                time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/get_reward", json=OFFICIAL_BODY)
        assert r.json()["rewards"] == [1.0, 0.0]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert code in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.stdout.read()


# --------------------------------------------------------------------------- per-request isolation (issue 17)


def typed(answer: str, question: str = "What color is the square?") -> dict:
    return {"question": question, "choices": ["A) red", "B) blue"], "answer": answer}


class PoisonableEngine(BackendBase):
    """The real lexical answerer, except that a call holding a prompt with POISON in it fails as a whole: an
    engine failure caused by one request, injected on demand."""

    def __init__(self) -> None:
        super().__init__(BackendConfig(name="lexical"))
        self.inner = build_backend(BackendConfig(name="lexical"))
        self.model_id = self.inner.model_id
        self.calls: list[int] = []

    def generate(self, requests):
        poisoned = any("POISON" in json.dumps(r.messages) for r in requests)
        self.calls.append((len(requests), poisoned))
        if poisoned:
            raise RuntimeError("CUDA error: device-side assert (injected)")
        return self.inner.generate(requests)


def test_a_malformed_request_does_not_fail_the_valid_ones_batched_with_it() -> None:
    app = create_app(cfg())  # a long window: all four would share one engine call
    good_typed = {"captions": [FULL], "ground_truth": [[typed("B")]]}
    bad_typed = {"captions": [FULL, FULL], "ground_truth": [[typed("B")], [typed("E")]]}
    bad_official = {"prompts": [[FULL, [[CIRCLE_Q, "A"]]], [FULL, [[CIRCLE_Q, "E"], [SQUARE_Q, "B"]]]]}

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                client.post(f"{url}/v1/reward", json=good_typed), client.post(f"{url}/v1/reward", json=bad_typed),
                client.post(f"{url}/get_reward", json=OFFICIAL_BODY), client.post(f"{url}/get_reward", json=bad_official))

    with serve(app) as url:
        good, bad, good_off, bad_off = asyncio.run(fire(url))
        metrics = httpx.get(f"{url}/metrics").text
    assert good.status_code == 200 and good.json()["rewards"] == [1.0]
    assert good_off.status_code == 200 and good_off.json()["rewards"] == [1.0, 0.0]
    assert bad.status_code == 422
    assert bad.json()["error"] == "ground_truth[1][0]: answer 'E' is not one of the labels A, B"
    assert bad_off.status_code == 422
    assert bad_off.json()["error"] == "prompts[1].qa[0]: answer 'E' is not one of the labels A, B, C, D"
    assert sum(app.state.scorer.scored) == 3  # only the valid captions reached the engine
    assert "caprl_reward_engine_errors_total 0.0" in metrics


@pytest.mark.parametrize("endpoint, body, message", [
    ("get_reward", {"prompts": [[FULL, [[CIRCLE_Q, "A"]]], [FULL, []]]}, "prompts[1].qa: empty QA list"),
    ("v1/reward", {"captions": [FULL, FULL], "ground_truth": [[typed("B")], []]}, "ground_truth[1]: empty QA list"),
])
def test_an_empty_qa_list_is_a_422_not_a_zero(endpoint: str, body: dict, message: str) -> None:
    """The default (``empty_qa: refuse``): the request fails naming the caption, nothing is counted as zeroed."""
    with serve(create_app(cfg())) as url:
        r = httpx.post(f"{url}/{endpoint}", json=body)
        health = httpx.get(f"{url}/health").json()
    assert r.status_code == 422 and message in r.json()["error"] and "empty_qa: zero" in r.json()["error"]
    assert "rewards" not in r.json()
    assert health["empty_qa"] == "refuse" and health["empty_qa_captions"] == 0


def test_empty_qa_zero_scores_an_empty_list_0_in_every_term_and_counts_it() -> None:
    """``empty_qa: zero``, for the official batch client: the caption with no questions is 0 (its timestamps earn
    no format term either) and never reaches the engine; the others are scored as ever; /health and /metrics count
    it."""
    body = {"prompts": [["[00:00] A red circle at the left.", [[CIRCLE_Q, "A"]]], ["[00:00] A red circle.", []],
                        [HALF, [[CIRCLE_Q, "A"]]]], "query": [], "labels": []}
    app = create_app(cfg(empty_qa="zero", qa={"seed": 0, "task": "video", "answerer": {"name": "lexical"}}))
    with serve(app) as url:
        r = httpx.post(f"{url}/get_reward", json=body)
        alone = httpx.post(f"{url}/get_reward", json={"prompts": [[FULL, []], [HALF, []]]})
        health = httpx.get(f"{url}/health").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert r.status_code == 200, r.text
    assert r.json()["qa_rewards"] == [1.0, 0.0, 1.0] and r.json()["format_rewards"] == [1.0, 0.0, 0.0]
    assert r.json()["rewards"] == pytest.approx([1.2, 0.0, 1.0])
    assert alone.status_code == 200 and alone.json() == {"rewards": [0.0, 0.0], "qa_rewards": [0.0, 0.0],
                                                         "format_rewards": [0.0, 0.0]}
    assert list(app.state.scorer.scored) == [2]  # only the captions with questions reached the engine
    assert health["empty_qa"] == "zero" and health["empty_qa_captions"] == 3
    assert "caprl_reward_empty_qa_captions_total 3.0" in metrics


def test_empty_qa_zero_on_the_typed_endpoint_gives_the_details_of_no_questions() -> None:
    body = {"captions": [FULL, FULL], "ground_truth": [[typed("B")], []]}
    with serve(create_app(cfg(empty_qa="zero"))) as url:
        r = httpx.post(f"{url}/v1/reward", json=body)
        health = httpx.get(f"{url}/health").json()
    assert r.status_code == 200 and r.json()["rewards"] == [1.0, 0.0]
    empty = r.json()["details"][1]
    assert empty == {"qa_reward": 0.0, "n_questions": 0, "correct": [], "predicted": [], "cannot_answer": [],
                     "rewards": 0.0, "qa_rewards": 0.0}
    assert health["empty_qa_captions"] == 1


def test_an_answer_given_as_option_text_is_scored_as_its_label() -> None:
    # FULL says the circle is red: "red" must read as A (correct), "yellow" as D (wrong) -- not as "R" or "Y"
    official = {"prompts": [[FULL, [[CIRCLE_Q, "red"]]], [FULL, [[CIRCLE_Q, "Yellow"]]], [FULL, [[SQUARE_Q, " blue "]]]]}
    typed_body = {"captions": [FULL, FULL], "ground_truth": [[typed("blue")], [typed("red")]]}
    with serve(create_app(cfg())) as url:
        off = httpx.post(f"{url}/get_reward", json=official)
        typ = httpx.post(f"{url}/v1/reward", json=typed_body)
        purple = httpx.post(f"{url}/get_reward", json={"prompts": [[FULL, [[CIRCLE_Q, "purple"]]]]})
    assert off.status_code == 200 and off.json()["rewards"] == [1.0, 0.0, 1.0]
    assert typ.status_code == 200 and typ.json()["rewards"] == [1.0, 0.0]
    assert purple.status_code == 422  # not an option's text: never cut to "P"
    assert "answer 'purple' is neither a label (A, B, C, D) nor the text of a choice" in purple.json()["error"]


def test_an_engine_failure_caused_by_one_request_fails_only_that_request() -> None:
    engine = PoisonableEngine()
    app = create_app(cfg(), engine=engine)
    poisoned = {"prompts": [["POISON " + FULL, [[SQUARE_Q, "B"]]]]}

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(client.post(f"{url}/get_reward", json=OFFICIAL_BODY),
                                        client.post(f"{url}/get_reward", json=poisoned),
                                        client.post(f"{url}/v1/reward", json={"captions": [FULL],
                                                                             "ground_truth": [[typed("B")]]}))

    with serve(app) as url:
        good, bad, good_typed = asyncio.run(fire(url))
        metrics = httpx.get(f"{url}/metrics").text
    assert good.status_code == 200 and good.json()["rewards"] == [1.0, 0.0]
    assert good_typed.status_code == 200 and good_typed.json()["rewards"] == [1.0]
    assert bad.status_code == 503 and "device-side assert" in bad.json()["error"]
    assert "caprl_reward_engine_errors_total 1.0" in metrics
    # the poisoned prompt broke the engine call it was in; each request that call held was retried on its own
    poisoned_calls = [n for n, poisoned in engine.calls if poisoned]
    assert len(poisoned_calls) == 2 and poisoned_calls[-1] == 8  # its own 8 draws (qa_num), nobody else's
    assert app.state.scorer.retried_alone >= 1


def test_a_short_request_is_answered_before_a_long_one_sent_earlier() -> None:
    """The server streams every request's answer prompts into one engine: a request is answered when its own last
    prompt is. (A micro-batcher that runs one engine call at a time made the short request wait for the long one's
    call.) Real HTTP twice: our server, and the GPU-timing instrument behind the openai back end, where each
    prompt's answer length is a seeded function of the prompt."""
    pytest.importorskip("fastapi")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from gpu_timing_server import EngineConfig, lengths_for, serve_thread

    from caprl_kit.mcq.validate import validate_mcq

    engine_cfg = EngineConfig(max_running=8, step_s=0.01, prefill_steps=1, median_tokens=20, sigma=0.6, seed=7)
    q = {"question": "What color is the circle?", "choices": ["A) red", "B) blue"], "answer": "A"}
    with serve_thread(engine_cfg) as engine_url:
        server_cfg = cfg(qa={"mode": "all_qa", "sampling": {"max_tokens": 2048}, "answerer": {
            "name": "openai", "model": "gpu-timing", "openai": {"base_url": engine_url, "max_concurrency": 8}}})
        app = create_app(server_cfg)
        scorer, backend = app.state.scorer, app.state.scorer.qa.engine

        def answer_len(caption: str) -> int:  # what the instrument will take for this caption's one answer prompt
            requests, _ = scorer.qa.plan([caption], [[validate_mcq(q, "q")]])
            return lengths_for(engine_cfg, backend.payload(requests[0]))[0]

        captions = sorted((f"A red circle, take {i}." for i in range(60)), key=answer_len)
        short, long_ = captions[0], captions[-1]
        assert answer_len(long_) > 4 * answer_len(short) and answer_len(long_) > 50  # the long one takes > 0.5 s
        finished: list[str] = []

        async def fire(url: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                async def one(caption: str, delay: float) -> httpx.Response:
                    await asyncio.sleep(delay)
                    r = await client.post(f"{url}/v1/reward", json={"captions": [caption], "ground_truth": [[q]]})
                    finished.append(caption)
                    return r

                return await asyncio.gather(one(long_, 0.0), one(short, 0.3))

        with serve(app) as url:
            responses = asyncio.run(fire(url))
    assert [r.status_code for r in responses] == [200, 200]
    assert finished == [short, long_]
    assert list(scorer.scored) == [1, 1]


# --------------------------------------------------------------------------- several workers, prompt order (issue 22)


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` that multiprocessing spawned as workers (not its resource tracker)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="reads the worker processes from /proc (Linux)")
def test_cli_workers_2_score_concurrent_requests_and_stop_together(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    conf = tmp_path / "rm.yaml"
    conf.write_text(json.dumps({"kind": "serve_reward", "qa": {"answerer": {"name": "lexical"}, "seed": 0}}))
    proc = subprocess.Popen([sys.executable, "-m", "caprl_kit", "serve-reward", "-c", str(conf), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        deadline, healthy = time.time() + 90, False
        while len(workers) < 2 or not healthy:
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.poll() is not None else "workers did not start")
            time.sleep(0.2)
            workers = _children(proc.pid)
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"{url}/health", timeout=1).status_code == 200
        bodies = [{"prompts": [[FULL if i % 2 else HALF, [[SQUARE_Q, "B"]]], [FULL, [[CIRCLE_Q, "A"]]]],
                   "query": [], "labels": []} for i in range(40)]

        async def fire() -> list[httpx.Response]:  # one connection per request: the kernel picks a worker for each
            async def one(b: dict) -> httpx.Response:
                async with httpx.AsyncClient(timeout=60) as client:
                    return await client.post(f"{url}/get_reward", json=b)

            return await asyncio.gather(*(one(b) for b in bodies))

        responses = asyncio.run(fire())
        typed_r = httpx.post(f"{url}/v1/reward", json={"captions": [FULL], "ground_truth": [[typed("B")]]})
        assert [r.status_code for r in responses] == [200] * 40
        # the lexical answerer: FULL says the square is blue, HALF says nothing of it
        assert [r.json()["rewards"] for r in responses] == [[1.0, 1.0] if i % 2 else [0.0, 1.0] for i in range(40)]
        assert typed_r.status_code == 200 and typed_r.json()["rewards"] == [1.0]
        assert len(_children(proc.pid)) == 2  # both workers still up, none restarted after a crash
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    output = proc.stdout.read()
    assert code == 0, output
    assert "Traceback" not in output
    for pid in workers:  # the supervisor stopped its workers before it exited
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_workers_above_1_refused_for_an_answerer_that_loads_the_model() -> None:
    from caprl_kit.config import load_config
    from caprl_kit.errors import ConfigError

    with pytest.raises(ConfigError, match="workers") as err:
        load_config("serve_reward/qa_image_qwen25_3b", ["workers=2"], kind="serve_reward")
    assert "vllm serve" in str(err.value)
    assert cfg(workers=3).workers == 3  # the lexical answerer loads no model: fine


def test_one_captions_answer_prompts_reach_the_engine_one_after_another() -> None:
    """Prefix affinity: a caption's answer prompts share everything up to the question, so they reach the engine
    adjacent (and a request's captions in a row), whatever else is queued: the order the GPU-timing instrument saw
    them arrive, with concurrent requests from 12 clients and one request in flight at a time to the engine."""
    pytest.importorskip("fastapi")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from gpu_timing_server import EngineConfig, prompt_key, serve_thread

    from caprl_kit.mcq.validate import validate_mcq

    questions = [typed("B"), typed("A", "What color is the circle?"), typed("A", "Is there a red shape?")]
    mcqs = [validate_mcq(q, "q") for q in questions]
    captions = [f"{FULL} Take {i}." for i in range(24)]
    engine_cfg = EngineConfig(max_running=4, step_s=0.002, prefill_steps=1, median_tokens=2, sigma=0.6, seed=3)
    with serve_thread(engine_cfg) as engine_url:
        server_cfg = cfg(qa={"mode": "all_qa", "answerer": {"name": "openai", "model": "gpu-timing", "openai": {
            "base_url": engine_url, "max_concurrency": 1}}})
        app = create_app(server_cfg)
        scorer, backend = app.state.scorer, app.state.scorer.qa.engine
        owner = {}  # all_qa asks every question once, unshuffled: each caption's prompts are known in advance
        for caption in captions:
            for request in scorer.qa.plan([caption], [mcqs])[0]:
                owner[prompt_key(backend.payload(request))] = caption
        assert len(owner) == 3 * len(captions)

        async def fire(url: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(
                    client.post(f"{url}/v1/reward", json={"captions": captions[i : i + 2],
                                                          "ground_truth": [questions, questions]})
                    for i in range(0, len(captions), 2)))

        with serve(app) as url:
            responses = asyncio.run(fire(url))
        arrivals = httpx.get(engine_url.rsplit("/v1", 1)[0] + "/stats").json()["arrivals"]
    assert [r.status_code for r in responses] == [200] * 12
    assert backend.max_in_flight == 1 and len(arrivals) == 3 * len(captions)
    order = [owner[key] for key in arrivals]
    runs = [caption for caption, _ in itertools.groupby(order)]
    assert sorted(runs) == sorted(captions)  # every caption's 3 prompts arrived as one run, nobody else's between
    pairs = {(captions[i], captions[i + 1]) for i in range(0, len(captions), 2)}
    assert all((runs[k], runs[k + 1]) in pairs for k in range(0, len(runs), 2))  # a request's captions in a row
