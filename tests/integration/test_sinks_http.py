"""Webhook and Alertmanager sinks against real aiohttp receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sinks_support import Receiver, RecordingOutbox, event
from structlog.testing import capture_logs
from support import free_port

from fossamon.config import AlertmanagerSinkConfig, WebhookSinkConfig, validate_section
from fossamon.model import EventKind, Severity
from fossamon.sinks import build_sink_workers
from fossamon.sinks.base import Delivery

W, C = Severity.WARNING, Severity.CRITICAL
TOKEN = "s3cr3t-t0ken"


@pytest.fixture
async def receiver():
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def workers():
    """Build and start workers; every one is stopped at the end, pass or fail."""
    started = []

    def make(*configs, outbox=None, host="web1"):
        built = build_sink_workers(list(configs), host, outbox or RecordingOutbox())
        for worker in built:
            worker.start()
        started.extend(built)
        return built

    yield make
    for worker in started:
        await worker.stop(0.2)


def webhook(url, **settings):
    base = {"type": "webhook", "name": "hook", "url": url, "timeout": "2s"}
    base |= {"backoff": "20ms", "backoff_max": "50ms"}
    return validate_section(WebhookSinkConfig, {**base, **settings})


def parse_iso(text):
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


async def until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class TestWebhook:
    async def test_posts_the_event_record(self, receiver, workers):
        outbox = RecordingOutbox()
        [worker] = workers(webhook(f"{receiver.base}/ok/hook"), outbox=outbox)
        e = event(severity=C)
        worker.submit(Delivery(5, e, "web1"))
        await receiver.wait_for(1)
        await until(lambda: outbox.delivered_ids == [5])
        [request] = receiver.requests
        assert request.body == e.to_json("web1")
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"].startswith("fossamon/")

    async def test_slack_format(self, receiver, workers):
        [worker] = workers(webhook(f"{receiver.base}/ok/slack", format="slack"))
        worker.submit(Delivery(1, event(EventKind.ESCALATED, C, previous=W), "web1"))
        await receiver.wait_for(1)
        assert receiver.requests[0].body == {
            "text": "[CRITICAL] api_latency on web1: p95 latency 1.5s above 1s (escalated)"
        }

    async def test_headers_and_bearer_token_arrive_and_never_reach_a_log(self, receiver, workers):
        config = webhook(
            f"{receiver.base}/fail/1/auth",
            bearer_token=TOKEN,
            headers={"X-Team": "ops", "Cookie": "session=cookie-secret"},
        )
        [worker] = workers(config)
        with capture_logs() as logs:
            worker.submit(Delivery(1, event(), "web1"))
            await receiver.wait_for(2)
            await until(lambda: worker.stats.sent == 1)
        headers = receiver.requests[-1].headers
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["X-Team"] == "ops"
        assert headers["Cookie"] == "session=cookie-secret"
        assert logs  # the 500 was logged …
        text = repr(logs)
        assert TOKEN not in text  # … without a secret in it
        assert "cookie-secret" not in text

    async def test_500_then_recovers(self, receiver, workers):
        outbox = RecordingOutbox()
        [worker] = workers(webhook(f"{receiver.base}/fail/2/flaky", retries=3), outbox=outbox)
        with capture_logs() as logs:
            worker.submit(Delivery(4, event(), "web1"))
            await until(lambda: worker.stats.sent == 1)
        assert len(receiver.requests) == 3
        assert worker.stats.retried == 2
        assert outbox.delivered_ids == [4]
        [first] = [e for e in logs if e["event"] == "delivery failed; will retry"][:1]
        assert first["error"].startswith(f"HTTP 500 from http://127.0.0.1:{receiver.port}")
        assert "try again later" in first["error"]

    async def test_a_request_the_receiver_refuses_is_not_retried(self, receiver, workers):
        """A 400 cannot succeed the next time: failed at once, logged, not kept."""
        outbox = RecordingOutbox()
        [worker] = workers(webhook(f"{receiver.base}/status/400/bad", retries=3), outbox=outbox)
        with capture_logs() as logs:
            worker.submit(Delivery(6, event(), "web1"))
            await until(lambda: worker.stats.failed == 1)
        assert len(receiver.requests) == 1
        assert worker.stats.retried == 0
        assert outbox.dropped_ids == [6]
        assert any("refused" in e["event"] for e in logs)

    async def test_429_is_retried(self, receiver, workers):
        [worker] = workers(webhook(f"{receiver.base}/status/429/slow", retries=1, backoff="10ms"))
        worker.submit(Delivery(1, event(), "web1"))
        await until(lambda: worker.stats.failed == 1)
        assert len(receiver.requests) == 2

    async def test_persistent_failure_is_logged_and_kept(self, receiver, workers):
        outbox = RecordingOutbox()
        url = f"http://alert:{TOKEN}@127.0.0.1:{receiver.port}/status/503/x"
        [worker] = workers(webhook(url, retries=1), outbox=outbox)
        with capture_logs() as logs:
            worker.submit(Delivery(8, event(), "web1"))
            await until(lambda: worker.stats.failed == 1)
        assert outbox.delivered_ids == []
        assert receiver.requests[0].headers["Authorization"].startswith("Basic ")
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert error["error"].startswith(
            f"HTTP 503 from http://alert:***@127.0.0.1:{receiver.port}"
        )
        assert TOKEN not in repr(logs)

    async def test_refused_connection_is_a_failure(self, workers):
        [worker] = workers(webhook(f"http://127.0.0.1:{free_port()}/x", retries=0))
        with capture_logs() as logs:
            worker.submit(Delivery(1, event(), "web1"))
            await until(lambda: worker.stats.failed == 1)
        [error] = [e for e in logs if e["log_level"] == "error"]
        assert "ClientConnectorError" in error["error"]

    async def test_a_hung_webhook_delays_no_other_sink(self, receiver, workers):
        hung, healthy = workers(
            webhook(f"{receiver.base}/hang/a", name="hung", timeout="1500ms", retries=0),
            webhook(f"{receiver.base}/ok/b", name="healthy"),
        )
        started = time.monotonic()
        for i in range(1, 6):
            d = Delivery(i, event(ts=1_800_000_000.0 + i), "web1")
            hung.submit(d)
            healthy.submit(d)
        await receiver.wait_for(5, path="/ok/b", timeout=1.0)
        # all five reached the healthy receiver long before the hung one's first timeout
        assert receiver.on("/ok/b")[-1].at - started < 0.5
        assert len(receiver.on("/hang/a")) == 1
        assert hung.stats.queued == 4
        # the hung attempt ends at its timeout, then the next one starts
        await receiver.wait_for(2, path="/hang/a", timeout=3.0)
        assert 1.4 < receiver.on("/hang/a")[1].at - receiver.on("/hang/a")[0].at < 2.5
        stopping = time.monotonic()
        await hung.stop(0.2)
        assert time.monotonic() - stopping < 0.7


def alertmanager(url, **settings):
    base = {"type": "alertmanager", "name": "am", "url": url, "resend_every": "200ms"}
    base |= {"timeout": "2s", "backoff": "20ms", "backoff_max": "50ms"}
    return validate_section(AlertmanagerSinkConfig, {**base, **settings})


class TestAlertmanager:
    async def test_firing_is_resent_with_ends_at_ahead_then_resolved_for_a_while(
        self, receiver, workers
    ):
        outbox = RecordingOutbox()
        config = alertmanager(f"{receiver.base}/ok", labels={"team": "ops"})
        [worker] = workers(config, outbox=outbox)
        now = time.time()
        worker.submit(Delivery(1, event(severity=C, ts=now, since=now - 30), "web1"))
        await receiver.wait_for(3, timeout=2.0)  # the event, then two re-sends
        assert outbox.delivered_ids == [1]
        first, *resends = receiver.requests[:3]
        assert first.path == "/ok/api/v2/alerts"
        [alert] = first.body
        assert alert["labels"] == {
            "endpoint": "health",
            "instance": "web1",
            "team": "ops",
            "alertname": "api_latency",
            "severity": "critical",
        }
        assert alert["annotations"]["summary"] == "p95 latency 1.5s above 1s"
        assert alert["annotations"]["value"] == "1.5"
        assert abs(parse_iso(alert["startsAt"]) - (now - 30)) < 0.01
        for request in [first, *resends]:
            [sent] = request.body
            # endsAt ≈ the time of sending + 4 × resend_every
            sent_at = time.time() - (time.monotonic() - request.at)
            assert abs(parse_iso(sent["endsAt"]) - (sent_at + 0.8)) < 0.1
        gaps = [
            b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:3], strict=False)
        ]
        assert all(0.15 < gap < 0.5 for gap in gaps)

        resolved_at = time.time()
        resolve = event(EventKind.RESOLVED, C, previous=C, ts=resolved_at, since=now - 30)
        assert worker.accepts(resolve)
        worker.submit(Delivery(2, resolve, "web1"))
        await until(lambda: outbox.delivered_ids == [1, 2])
        count = len(receiver.requests)
        await receiver.wait_for(count + 2, timeout=2.0)  # a resolve is re-sent too
        for request in receiver.requests[-3:]:
            [sent] = request.body
            assert abs(parse_iso(sent["endsAt"]) - resolved_at) < 0.01

    async def test_escalation_ends_the_warning_alert_in_the_same_post(self, receiver, workers):
        [worker] = workers(alertmanager(f"{receiver.base}/ok", resend_every="1h"))
        now = time.time()
        worker.submit(Delivery(1, event(severity=W, ts=now), "web1"))
        worker.submit(Delivery(2, event(EventKind.ESCALATED, C, previous=W, ts=now + 1), "web1"))
        await until(lambda: worker.stats.sent == 2)
        posted = [a for r in receiver.requests for a in r.body]
        final = {a["labels"]["severity"]: a for a in posted}
        assert abs(parse_iso(final["warning"]["endsAt"]) - (now + 1)) < 0.01
        assert parse_iso(final["critical"]["endsAt"]) > now + 3600

    async def test_failed_event_is_delivered_by_a_later_resend(self, receiver, workers):
        outbox = RecordingOutbox()
        # the event's own attempt and its one retry fail; the periodic re-send gets through
        config = alertmanager(f"{receiver.base}/fail/2", retries=1, resend_every="100ms")
        [worker] = workers(config, outbox=outbox)
        with capture_logs() as logs:
            worker.submit(Delivery(3, event(severity=C, ts=time.time()), "web1"))
            await until(lambda: outbox.delivered_ids == [3])
        assert worker.stats.failed == 1
        assert any(e["log_level"] == "error" for e in logs)
        assert len(receiver.requests) == 3

    async def test_resend_failures_back_off_and_recover(self, receiver, workers):
        config = alertmanager(f"{receiver.base}/fail/4", retries=0, resend_every="50ms")
        [worker] = workers(config)
        with capture_logs() as logs:
            worker.seed_firing([event(severity=C, ts=time.time())])
            await receiver.wait_for(6, timeout=3.0)
        events = [e["event"] for e in logs]
        assert events.count("re-sending alerts failed") == 1  # once per episode
        assert events.count("re-sending alerts works again") == 1
