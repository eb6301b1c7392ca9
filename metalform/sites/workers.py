"""Which workers are live, per site: their heartbeat keys in Redis, and the queue depths."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from amqp.exceptions import ChannelError
from celery import Celery

from metalform.sites.app import HEARTBEAT_PREFIX
from metalform.sites.config import QUEUE_PREFIX, queue_of


@dataclass(frozen=True)
class WorkerInfo:
    site: str
    hostname: str
    pid: int
    last_heartbeat: float
    in_flight: int
    processed: int
    refused: int

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "hostname": self.hostname,
            "pid": self.pid,
            "lastHeartbeat": self.last_heartbeat,
            "inFlight": self.in_flight,
            "processed": self.processed,
            "refused": self.refused,
        }


def live_workers(client: redis.Redis) -> dict[str, list[WorkerInfo]]:
    """Workers whose heartbeat key has not expired, by site."""
    found: dict[str, list[WorkerInfo]] = {}
    keys = sorted(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=500))
    for raw in client.mget(keys) if keys else []:
        if raw is None:
            continue  # expired between the scan and the read
        data = json.loads(raw)
        info = WorkerInfo(
            site=str(data["site"]),
            hostname=str(data["hostname"]),
            pid=int(data["pid"]),
            last_heartbeat=float(data["lastHeartbeat"]),
            in_flight=int(data.get("inFlight", 0)),
            processed=int(data.get("processed", 0)),
            refused=int(data.get("refused", 0)),
        )
        found.setdefault(info.site, []).append(info)
    return found


def queue_depths(client: redis.Redis, sites: list[str]) -> dict[str, int]:
    """Tasks waiting in each site's queue (a Redis broker keeps a queue as a list of its name;
    the broker is the reply Redis by default)."""
    return {site: int(client.llen(f"{QUEUE_PREFIX}{site}")) for site in sites}


def amqp_queue_depths(app: Celery, sites: list[str]) -> dict[str, int]:
    """Tasks waiting in each site's queue on RabbitMQ: a passive declare counts them (on a
    channel of its own: declaring a queue that does not exist yet closes the channel)."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        for site in sites:
            channel = connection.channel()
            try:
                depths[site] = int(channel.queue_declare(queue_of(site), passive=True)[1])
            except ChannelError:
                depths[site] = 0  # declared by the first worker or task
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


Depths = Callable[[list[str]], dict[str, int]]


def overview(client: redis.Redis, now: float, depths: Depths | None = None) -> list[dict[str, Any]]:
    """Per site: live workers (last heartbeat, tasks in flight) and the tasks queued
    (`depths`: by default the queue lists of a Redis broker, which also show the sites whose
    tasks wait with no worker live)."""
    by_site = live_workers(client)
    if depths is None:
        queued = {
            key.decode().removeprefix(QUEUE_PREFIX)
            for key in client.scan_iter(match=f"{QUEUE_PREFIX}*", _type="list")
        }
        for site in queued:
            by_site.setdefault(site, [])  # tasks wait there and no worker is live: worth showing
        found = queue_depths(client, sorted(by_site))
    else:
        found = depths(sorted(by_site))
    return [
        {
            "site": site,
            "queueDepth": found.get(site, 0),
            "workers": [
                {**w.as_json(), "secondsSinceHeartbeat": round(max(0.0, now - w.last_heartbeat), 3)}
                for w in sorted(by_site[site], key=lambda w: w.hostname)
            ],
        }
        for site in sorted(by_site)
    ]


def render(sites: list[dict[str, Any]]) -> list[str]:
    """`metalform status` lines: one per worker, under its site."""
    if not sites:
        return ["Workers: none live"]
    lines = ["Workers"]
    for site in sites:
        lines.append(f"  site {site['site']}: queued {site['queueDepth']}")
        for w in site["workers"]:
            lines.append(
                f"    {w['hostname']}  last heartbeat {w['secondsSinceHeartbeat']:.1f}s ago, "
                f"{w['inFlight']} in flight, {w['processed']} done, {w['refused']} refused"
            )
    return lines
