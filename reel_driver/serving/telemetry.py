"""What `reel-driver serve` tells Prometheus at `GET /metrics` (prometheus-client, text format).

Every label takes a bounded set of values: the route template (never the path a caller sent),
the method and the status code. The metrics live in the app's own registry, so that each app
(and each test) counts from zero.
"""

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector

# the route label of a request no route matched (a 404, a 405): one value, whatever was asked
UNMATCHED = "unmatched"
# a request is a few milliseconds to a few seconds (a 500-item batch on a busy machine)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Telemetry:
    """The server's metrics, and the registry's state that health reports."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU and open files of the server process
        self.requests = Counter("reel_driver_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("reel_driver_request_duration_seconds", "Seconds from request to response",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.items = Counter("reel_driver_items_scored", "Movies scored (a batch counts each item)",
                             registry=self.registry)
        self.flagged = Counter("reel_driver_items_above_threshold",
                               "Movies scored at or above the served version's threshold (would_watch)",
                               registry=self.registry)
        self.version = Gauge("reel_driver_served_model_version",
                             "The registered version served (0 while none is)", registry=self.registry)
        self.poll_failures = Counter("reel_driver_registry_poll_failures",
                                     "Registry polls that got no answer (the current model kept serving)",
                                     registry=self.registry)
        self.load_failures = Counter("reel_driver_model_load_failures",
                                     "Loads of a new champion whose artifacts did not come (tried again at the next poll)",
                                     registry=self.registry)
        self.last_poll: float | None = None  # the clock at the last poll the registry answered
        self.unreachable_since: float | None = None  # the clock at the first failed poll of a run of them
        Gauge("reel_driver_registry_last_success_age_seconds",
              "Seconds since the registry last answered a poll (-1 before it ever did)",
              registry=self.registry).set_function(self._since_last_poll)

    def _since_last_poll(self) -> float:
        return -1.0 if self.last_poll is None else self.clock() - self.last_poll

    def polled(self) -> None:
        self.last_poll, self.unreachable_since = self.clock(), None

    def poll_failed(self) -> None:
        self.poll_failures.inc()
        if self.unreachable_since is None:
            self.unreachable_since = self.clock()

    def scored(self, items: int, flagged: int) -> None:
        self.items.inc(items)
        self.flagged.inc(flagged)

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Instrumented:
    """ASGI middleware: each HTTP request counted and timed by its route template and status. It sits
    inside the middleware that rewrites the scope, so that it sees the route the router matched."""

    def __init__(self, app, telemetry: Telemetry) -> None:
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception that escapes is answered 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            self.telemetry.answered(scope["method"], route, status, time.perf_counter() - started)
