"""Prometheus metrics: the Temporal SDK's own, plus routedesk's read from the case store.

Ours are computed at scrape time, one query each, by :class:`StoreCollector`: the store is
the one place every process writes to, so the figures are right however many workers and
intakes run, survive restarts, and need no hook in the activities. They describe the whole
deployment, not the process scraped: every process serving ``/metrics`` reports the same
values, so aggregate them with ``max``, not ``sum`` (docs/deployment.md).

The SDK's metrics (workflow and activity task latencies, slots, polls, RPCs) are exported by
its Rust core on a private local port (:func:`sdk_runtime`); ``/metrics`` appends them, so a
process has one endpoint to scrape.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from routedesk.models import CaseRow, EmailRow, OfferRow, QueueRow
from routedesk.store import Store

log = logging.getLogger("routedesk.metrics")

# Seconds. Arrival to queued is a store round-trip or two (docs/benchmarks.md: milliseconds);
# arrival to assigned includes a person accepting, so the buckets reach a day.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
LIVE = "live"


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sdk_runtime() -> tuple[Runtime, str]:
    """A Temporal runtime exporting the SDK's metrics in Prometheus format on a local port.

    Create it before the client: the client (and its workers) report through it.
    """
    bind = f"127.0.0.1:{free_local_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))
    return runtime, f"http://{bind}/metrics"


def _naive_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _seconds_between(dialect: str, start: Any, end: Any) -> Any:
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return None


class StoreCollector(Collector):
    """routedesk's figures from the case store, one query each, at every scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("routedesk_store_up", "1 when the case store answered this scrape")
        try:
            metrics = list(self._collect())
        except SQLAlchemyError as exc:
            log.info("metrics: the case store did not answer: %s", str(exc).splitlines()[0][:200])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        dialect = self.store.db.read_engine.dialect.name
        now = _naive_utc(datetime.now(UTC))
        with self.store.db.read() as s:
            received = CounterMetricFamily(
                "routedesk_emails_received",
                "Emails stored, by intake channel and intake decision (a redelivery is not a new email)",
                labels=["channel", "decision"],
            )
            deliveries = CounterMetricFamily(
                "routedesk_email_deliveries", "Deliveries, redeliveries included, by intake channel", labels=["channel"]
            )
            per_channel: dict[str, int] = {}
            email_rows = s.exec(
                select(EmailRow.source, EmailRow.status, func.count(), func.sum(EmailRow.deliveries)).group_by(
                    EmailRow.source, EmailRow.status
                )
            ).all()
            for channel, decision, count, delivered in email_rows:
                received.add_metric([channel, decision], count)
                per_channel[channel] = per_channel.get(channel, 0) + int(delivered or 0)
            for channel, delivered in sorted(per_channel.items()):
                deliveries.add_metric([channel], delivered)
            yield received
            yield deliveries

            routed = CounterMetricFamily(
                "routedesk_cases_routed", "Cases routed to a queue, by queue", labels=["queue"]
            )
            case_rows = s.exec(
                select(CaseRow.queue_id, func.count())
                .where(col(CaseRow.queue_id).is_not(None))
                .group_by(CaseRow.queue_id)
            ).all()
            for queue, count in case_rows:
                routed.add_metric([str(queue)], count)
            yield routed

            offers = CounterMetricFamily(
                "routedesk_offers", "Closed offers, by outcome (accepted, declined, timed_out, ...)", labels=["outcome"]
            )
            live = GaugeMetricFamily("routedesk_offers_live", "Offers waiting for the agent's answer")
            live_count = 0
            for outcome, count in s.exec(select(OfferRow.status, func.count()).group_by(OfferRow.status)).all():
                if outcome == LIVE:
                    live_count = count
                else:
                    offers.add_metric([outcome], count)
            live.add_metric([], live_count)
            yield offers
            yield live

            depth = GaugeMetricFamily(
                "routedesk_queue_depth", "Cases waiting in the queue for an agent", labels=["queue"]
            )
            oldest = GaugeMetricFamily(
                "routedesk_queue_oldest_wait_seconds", "How long the oldest waiting case has waited", labels=["queue"]
            )
            waiting = {
                queue: (count, first)
                for queue, count, first in s.exec(
                    select(CaseRow.queue_id, func.count(), func.min(CaseRow.queued_at))
                    .where(CaseRow.status == "queued")
                    .group_by(CaseRow.queue_id)
                ).all()
            }
            queues = set(s.exec(select(QueueRow.id)).all()) | {q for q in waiting if q}
            for queue in sorted(queues):
                count, first = waiting.get(queue, (0, None))
                depth.add_metric([queue], count)
                wait = (now - _naive_utc(first)).total_seconds() if isinstance(first, datetime) else 0.0
                oldest.add_metric([queue], max(0.0, wait))
            yield depth
            yield oldest

            for name, end, doc in (
                (
                    "routedesk_arrival_to_queued_seconds",
                    CaseRow.queued_at,
                    "From the email's arrival to its case queued",
                ),
                ("routedesk_arrival_to_assigned_seconds", CaseRow.assigned_at, "From the email's arrival to assigned"),
            ):
                hist = self._histogram(s, dialect, name, end, doc + " (first routing of each case)")
                if hist is not None:
                    yield hist

    def _histogram(self, s: Any, dialect: str, name: str, end: Any, doc: str) -> Metric | None:
        seconds = _seconds_between(dialect, EmailRow.received_at, end)
        if seconds is None:
            return None  # a database routedesk does not support
        # Cumulative bucket counts, the count and the sum in one aggregate over the join.
        columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in BUCKETS]
        row = s.exec(
            select(func.count(), func.sum(seconds), *columns)
            .select_from(CaseRow)
            .join(EmailRow, col(EmailRow.id) == CaseRow.source_email_id)
            .where(col(end).is_not(None), CaseRow.round == 1)
        ).one()
        count, total, *cumulative = row
        buckets = [(str(float(b)), int(c or 0)) for b, c in zip(BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", int(count or 0)))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(total or 0.0))


def store_registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


async def sdk_metrics_text(url: str | None) -> bytes:
    """The SDK's own exposition, or nothing when it is not exported or does not answer."""
    if not url:
        return b""
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            resp = await http.get(url)
        return resp.content if resp.status_code == 200 else b""
    except httpx.HTTPError as exc:
        log.info("metrics: the Temporal SDK exporter at %s did not answer: %s", url, exc)
        return b""


async def exposition(registry: CollectorRegistry, sdk_url: str | None) -> bytes:
    ours = await asyncio.to_thread(generate_latest, registry)
    sdk = await sdk_metrics_text(sdk_url)
    return ours + (b"\n" if sdk and not ours.endswith(b"\n") else b"") + sdk
