"""``zhongtai.client`` over a scripted transport: batching, retries with backoff, and what each answer raises.
(tests/integration/test_client.py runs it against the real collector.)"""

from __future__ import annotations

import json

import httpx
import pytest

from zhongtai.client import Client, Refused, Rejected, Unavailable


class Script:
    """Answers requests from a list (an exception instance is raised as a network error); records bodies."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        assert request.url.path == "/v1/batch" and request.headers["authorization"].startswith("Basic ")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: Script, sleeps: list[float], **kw) -> Client:
    return Client("http://collector", "key-12345678", transport=httpx.MockTransport(script), sleep=sleeps.append, **kw)


def _ok(n: int) -> httpx.Response:
    return httpx.Response(200, json={"accepted": n})


def test_retries_with_backoff_and_retry_after_keep_the_message_ids() -> None:
    script = Script(httpx.Response(503, json={"error": "Kafka down"}, headers={"Retry-After": "2"}),
                    httpx.ConnectError("refused"), _ok(2))
    sleeps: list[float] = []
    c = _client(script, sleeps, backoff_base_s=0.5)
    ids = [c.track("x", user_id="u1"), c.identify("u1", {"tier": "gold"})]
    assert c.flush() == 2 and c.queue == [] and c.accepted == 2
    assert len(sleeps) == 2 and sleeps[0] == 2.0 and 0.5 <= sleeps[1] <= 1.0  # Retry-After, then 2nd backoff step
    assert [[m["messageId"] for m in b["batch"]] for b in script.bodies] == [ids, ids, ids]


def test_an_outage_outlasting_the_retries_raises_and_keeps_the_events() -> None:
    script = Script(*[httpx.Response(503, json={"error": "Kafka down"}) for _ in range(4)])
    sleeps: list[float] = []
    c = _client(script, sleeps, max_retries=3)
    c.track("x", user_id="u1")
    with pytest.raises(Unavailable, match=r"in 4 attempts \(HTTP 503: Kafka down\); they are still queued \(1\)"):
        c.flush()
    assert len(c.queue) == 1 and len(sleeps) == 3 and sleeps[2] <= 2.0


def test_a_400_rejects_only_its_events_and_says_why() -> None:
    rejected = [{"index": 1, "messageId": "m2", "reason": "wrong_type:props.price", "message": "price must be..."}]
    script = Script(httpx.Response(400, json={"error": "1 of 2", "accepted": 1, "rejected": rejected}))
    c = _client(script, [])
    c.track("purchase", {"price": "1"}, user_id="u1", message_id="m1")
    c.track("purchase", {"price": "x"}, user_id="u1", message_id="m2")
    with pytest.raises(Rejected, match=r"rejected 1 event\(s\) \(wrong_type:props.price\); 1 accepted") as e:
        c.flush()
    assert e.value.rejected[0]["event"]["properties"] == {"price": "x"}
    assert c.queue == [] and c.accepted == 1  # answered for: nothing left to send


def test_a_wrong_key_is_refused_and_the_events_stay() -> None:
    c = _client(Script(httpx.Response(401, json={"error": "missing or unknown write key"})), [])
    c.track("x", user_id="u1")
    with pytest.raises(Refused, match="answered 401: missing or unknown write key"):
        c.flush()
    assert len(c.queue) == 1


def test_batches_of_flush_at_and_413_halves_the_batch() -> None:
    script = Script(_ok(3), httpx.Response(413, json={"error": "too large"}), _ok(1), _ok(1))
    c = _client(script, [], flush_at=3)
    for i in range(5):
        c.track("x", user_id=f"u{i}")  # the third call flushes a full batch
    assert [len(b["batch"]) for b in script.bodies] == [3]
    assert c.flush() == 2
    assert [len(b["batch"]) for b in script.bodies] == [3, 2, 1, 1]


def test_an_event_without_an_identifier_is_refused_at_once() -> None:
    c = _client(Script(), [])
    with pytest.raises(ValueError, match="give user_id, anonymous_id or ids"):
        c.track("x")
    assert c.queue == []
