"""``GET /metrics``: Prometheus text format, from the database at scrape time and from this process.

Two kinds of figures:

- **State in the database**, read when Prometheus scrapes (a custom collector), so every
  API process reports the same truth and nothing drifts: cases by status, transcription
  jobs by state, today's calls by disposition (today in the centre's zone), recordings
  and their bytes, access-log length. ``hotline_database_up`` says whether that worked.
- **This process's HTTP traffic**: requests by method, route template and status, and a
  latency histogram, counted by :func:`count_requests` (the outermost middleware, so it
  sees the status the client got). Routes are templates (``/api/v1/recordings/{id}``),
  never raw paths, so a scanner cannot blow up the series count.

Each application gets its own :class:`~prometheus_client.CollectorRegistry`, not the
global one: several apps in one test process (or one process serving two apps) must not
collide on metric names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from api.openapi import PUBLIC, Routes
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cases.models import Case
from config.context import Context
from config.db import DatabaseError, utcnow
from config.logs import get_logger
from ivr.models import Call
from ivr.recording_search import day_bounds
from recordings.models import Recording, RecordingAccessHead
from transcription.models import DONE, FAILED, QUEUED, RUNNING, TranscriptionJob

log = get_logger("api.metrics")

JOB_STATES = (QUEUED, RUNNING, DONE, FAILED)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DatabaseCollector(Collector):
    """Reads the service's state from the database on every scrape (runs in a worker thread)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def describe(self) -> list[Metric]:
        return []  # nothing at registration: the database is read only when scraped

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("hotline_database_up", "1 if the database answered this scrape, else 0")
        try:
            families = self._read()
        except (DatabaseError, SQLAlchemyError) as e:
            log.warning("metrics: database unavailable", error=str(e).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        tz = self.ctx.settings.calendar.tz
        start, end = day_bounds(utcnow().astimezone(tz).date(), tz)
        with self.ctx.sessions() as s:
            cases = s.execute(select(Case.status, func.count()).group_by(Case.status)).all()
            jobs = dict(s.execute(select(TranscriptionJob.state, func.count()).group_by(TranscriptionJob.state)).all())
            calls = s.execute(
                select(Call.disposition, func.count())
                .where(Call.started_at >= start, Call.started_at < end)
                .group_by(Call.disposition)
            ).all()
            n_rec, n_bytes = s.execute(
                select(func.count(), func.coalesce(func.sum(Recording.bytes), 0)).where(Recording.deleted_at.is_(None))
            ).one()
            head = s.get(RecordingAccessHead, 1)
        g_cases = GaugeMetricFamily("hotline_cases", "Cases by status", labels=["status"])
        for status, n in sorted(cases):
            g_cases.add_metric([status], n)
        g_jobs = GaugeMetricFamily("hotline_transcription_jobs", "Transcription jobs by state", labels=["state"])
        for state in sorted(set(JOB_STATES) | set(jobs)):
            g_jobs.add_metric([state], jobs.get(state, 0))
        g_calls = GaugeMetricFamily(
            "hotline_calls_today", "Calls started today (centre's time zone) by disposition", labels=["disposition"]
        )
        for disposition, n in sorted(calls, key=lambda r: r[0] or ""):
            g_calls.add_metric([disposition or "in_progress"], n)
        g_rec = GaugeMetricFamily("hotline_recordings", "Stored recordings (not deleted)", value=n_rec)
        g_bytes = GaugeMetricFamily("hotline_recording_bytes", "Bytes of stored recordings (not deleted)", value=n_bytes)
        g_access = GaugeMetricFamily(
            "hotline_recording_access_entries", "Entries in the recording access log", value=head.seq if head else 0
        )
        return [g_cases, g_jobs, g_calls, g_rec, g_bytes, g_access]


class Metrics:
    """One application's registry: the database collector plus its HTTP counters."""

    def __init__(self, ctx: Context) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hotline_http_requests", "HTTP requests handled", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "hotline_http_request_duration_seconds",
            "Time to handle an HTTP request (until the handler returned)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(ctx))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition the scraper asked for (Prometheus text, or OpenMetrics), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


METRICS = web.AppKey("metrics", Metrics)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer
        raise
    finally:
        request.app[METRICS].observe(request.method, _route(request), status, loop.time() - started)


routes = Routes("metrics")


@routes.get("/metrics", summary="Prometheus metrics (text or OpenMetrics by Accept)", roles=PUBLIC)
async def metrics(request: web.Request) -> web.Response:
    """Public like /healthz: scrapers carry no credentials; the API listens on loopback by default."""
    body, content_type = await asyncio.to_thread(request.app[METRICS].render, request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def setup_metrics(app: web.Application, ctx: Context) -> None:
    """Give the app its registry (/metrics is in `routes`); add :func:`count_requests` as its first middleware."""
    app[METRICS] = Metrics(ctx)
