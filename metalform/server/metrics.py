"""Prometheus metrics of one server, on a registry of its own (tests create many apps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Counters and histograms of plans, applies, actions, webhooks and HTTP requests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._runs(self.registry)
        self._server(self.registry)
        self._sites(self.registry)
        self.sites: Callable[[], list[dict[str, Any]]] | None = None
        """Reads the sites' overview at scrape time (set when a broker is configured)."""

    def _runs(self, r: CollectorRegistry) -> None:
        """Plans, applies and their actions."""
        self.plans = Counter(
            "metalform_plans",
            "Planning jobs finished, by result and trigger.",
            ["result", "trigger"],
            registry=r,
        )
        self.plan_seconds = Histogram(
            "metalform_plan_duration_seconds",
            "Time to load, gather and plan.",
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.applies = Counter(
            "metalform_applies", "Applies finished, by result.", ["result"], registry=r
        )
        self.apply_seconds = Histogram(
            "metalform_apply_duration_seconds",
            "Time an apply ran.",
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "metalform_actions",
            "Apply actions finished, by outcome.",
            ["operation", "status"],
            registry=r,
        )
        self.action_seconds = Histogram(
            "metalform_action_duration_seconds",
            "Time one action took, read-back included.",
            ["operation"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )

    def _server(self, r: CollectorRegistry) -> None:
        """Webhooks, drift, jobs, streams, retention and HTTP."""
        self.webhooks = Counter(
            "metalform_webhook_deliveries",
            "Webhook deliveries, by forge and result.",
            ["forge", "result"],
            registry=r,
        )
        self.drift = Gauge(
            "metalform_drifted_resources",
            "Resources out of sync at the last plan of the tracked branch.",
            registry=r,
        )
        self.jobs = Gauge(
            "metalform_jobs_in_flight", "Plans and applies queued or running.", registry=r
        )
        self.streams = Gauge(
            "metalform_event_streams", "Server-Sent Events streams open.", registry=r
        )
        self.pruned = Counter(
            "metalform_pruned_records",
            "Records deleted by retention, by what they were (plans, applies, events, deliveries).",
            ["what"],
            registry=r,
        )
        self.http = Counter(
            "metalform_http_requests",
            "HTTP requests, by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "metalform_http_request_duration_seconds",
            "Time to answer an HTTP request (streams excluded).",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )

    def _sites(self, r: CollectorRegistry) -> None:
        """Site workers: tasks, their round trips, queues and live workers."""
        self.site_tasks = Counter(
            "metalform_site_tasks",
            "Tasks sent to site workers, by site, task (read, execute, fingerprints) and result.",
            ["site", "task", "result"],
            registry=r,
        )
        self.site_task_seconds = Histogram(
            "metalform_site_task_duration_seconds",
            "Round trip of a site task: sent, run by a worker, answered.",
            ["site", "task"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.site_queue_depth = Gauge(
            "metalform_site_queue_depth", "Tasks waiting in a site's queue.", ["site"], registry=r
        )
        self.site_workers = Gauge(
            "metalform_site_workers", "Live workers of a site (heartbeat).", ["site"], registry=r
        )

    def site_task(self, site: str, task: str, seconds: float, ok: bool) -> None:
        """A site task finished (the SiteRouter's observer)."""
        self.site_tasks.labels(site, task, "ok" if ok else "failed").inc()
        self.site_task_seconds.labels(site, task).observe(seconds)

    def _refresh_sites(self) -> None:
        if self.sites is None:
            return
        try:
            sites = self.sites()
        except Exception:  # the broker down: the gauges keep their last values
            return
        for site in sites:
            self.site_queue_depth.labels(site["site"]).set(site["queueDepth"])
            self.site_workers.labels(site["site"]).set(len(site["workers"]))

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        self._refresh_sites()
        return generate_latest(self.registry)
