from __future__ import annotations

import socket

import pytest

from fossamon.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"fossamon-test-{id(monkeypatch)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def close(notifier: Notifier) -> None:
    if notifier.socket is not None:
        notifier.socket.close()


class TestNotifier:
    def test_ready_with_non_ascii_status_arrives_as_utf8_in_one_datagram(self, notify_socket):
        notifier = Notifier()
        assert notifier.ready("3/3 collectors ok · api → 42 ms · café")
        data = notify_socket.recv(4096)
        close(notifier)
        assert data.decode("utf-8") == "READY=1\nSTATUS=3/3 collectors ok · api → 42 ms · café"

    def test_status_is_one_line(self, notify_socket):
        notifier = Notifier()
        notifier.status("line one\nline two")
        assert notify_socket.recv(4096) == b"STATUS=line one line two"
        close(notifier)

    def test_reloading_carries_monotonic_usec(self, notify_socket):
        notifier = Notifier()
        notifier.reloading()
        first, second = notify_socket.recv(4096).decode().split("\n")
        close(notifier)
        assert first == "RELOADING=1"
        assert second.startswith("MONOTONIC_USEC=")
        assert int(second.split("=")[1]) > 0

    def test_abstract_socket(self, abstract_socket):
        notifier = Notifier()
        notifier.stopping()
        assert abstract_socket.recv(4096) == b"STOPPING=1"
        close(notifier)

    def test_without_notify_socket_nothing_happens(self, monkeypatch):
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        notifier = Notifier()
        assert not notifier.enabled
        assert notifier.ready("x") is False

    def test_a_vanished_socket_is_reported_once_not_raised(self, notify_socket):
        notifier = Notifier()
        notify_socket.close()
        assert notifier.status("a") is False
        assert notifier.status("b") is False
        close(notifier)
