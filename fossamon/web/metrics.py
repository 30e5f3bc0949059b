"""`/metrics`: fossamon's samples and its own health through prometheus_client.

(Being written: see build_registry / exposition contracts below.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from fossamon.daemon import Daemon


def build_registry(daemon: Daemon) -> CollectorRegistry:
    """A registry of our own (never the process-global one) holding everything /metrics
    shows; collected at scrape time from the daemon's live state."""
    return daemon.live.registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and Content-Type for a scraper's Accept header (OpenMetrics when asked)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
