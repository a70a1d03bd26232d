"""Prometheus metrics for nodes and origins.

A node serves its figures over HTTP with ``rsc node --metrics-port PORT``
(``GET /metrics``, the Prometheus text format). An origin exports its
``Runtime.stats()`` into a prometheus-client registry with :func:`register`,
to be served however the application serves its own metrics::

    import prometheus_client, rsc.metrics

    async with Runtime(cluster) as rt:
        rsc.metrics.register(rt)               # the default REGISTRY
        prometheus_client.start_http_server(9100)

Every metric is read at scrape time from the figures rsc keeps anyway (a
node's STATUS_REPLY stats, the runtime's counters): exporting costs nothing
per task. :data:`NODE_METRICS` and :data:`ORIGIN_METRICS` list every name
(the operating guide documents them). A node's metrics carry a ``node``
label, an origin's an ``origin`` label (the runtime's name).

Needs the ``prometheus-client`` package (``pip install 'rsc[metrics]'``);
without it, :func:`register` and ``--metrics-port`` raise ``InvalidArgument``
saying so, and the rest of rsc works as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rsc.logs import get_logger
from rsc.errors import InvalidArgument

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from rsc.node.server import NodeServer
    from rsc.remote import Runtime

log = get_logger("rsc.metrics")

__all__ = ["NODE_METRICS", "ORIGIN_METRICS", "MetricsEndpoint", "Spec", "node_metric_families",
           "origin_metric_families", "register", "serve_node_metrics", "unregister"]


@dataclass(frozen=True)
class Spec:
    """One metric: the stats key it is read from, its name (a counter's
    exposition adds ``_total``), ``counter`` or ``gauge``, and its help.
    ``label`` names the label of a metric read from a dict of figures
    (``{"completed": 3, ...}``), one sample per key."""

    key: str
    name: str
    kind: str
    help: str
    label: str | None = None


#: A node's metrics, from its STATUS_REPLY stats (rsc.node.server.NodeServer.stats).
NODE_METRICS: tuple[Spec, ...] = (
    Spec("accepted", "rsc_node_tasks_accepted", "counter", "Tasks this node accepted."),
    Spec("finished", "rsc_node_tasks_finished", "counter",
         "Tasks that finished, by outcome (completed, failed, cancelled, panicked).", "outcome"),
    Spec("rejected", "rsc_node_tasks_rejected", "counter",
         "Spawns refused (unknown computation, invalid input, capacity, capability, draining)."),
    Spec("duplicates", "rsc_node_duplicate_spawns", "counter",
         "Spawns answered from the idempotency table instead of running again."),
    Spec("dropped", "rsc_node_messages_dropped", "counter",
         "Messages ignored as stale (a cancel for a finished task, and such)."),
    Spec("running", "rsc_node_tasks_running", "gauge", "Tasks running now."),
    Spec("capacity", "rsc_node_capacity", "gauge", "Most tasks the node runs at once."),
    Spec("connections", "rsc_node_connections", "gauge",
         "Open connections, those still in their handshake included."),
    Spec("idempotency_records", "rsc_node_idempotency_records", "gauge",
         "Idempotency records held (running tasks and results kept for duplicates)."),
    Spec("tombstones", "rsc_node_tombstones", "gauge", "Idempotency tombstones held."),
    Spec("kept_result_bytes", "rsc_node_kept_result_bytes", "gauge",
         "Bytes of finished results kept for duplicates (at most --max-kept-result-bytes)."),
    Spec("results_dropped", "rsc_node_results_dropped", "counter",
         "Finished results dropped to stay within --max-kept-result-bytes (their records stay)."),
    Spec("draining", "rsc_node_draining", "gauge", "1 while the node shuts down, else 0."),
    Spec("uptime_s", "rsc_node_uptime_seconds", "gauge", "Seconds since the node started."),
    Spec("rss_bytes", "rsc_node_resident_memory_bytes", "gauge",
         "Resident memory of the node process."),
    Spec("workers", "rsc_node_workers", "gauge",
         "Size of the worker pool (process isolation); absent without one."),
    Spec("workers_alive", "rsc_node_workers_alive", "gauge", "Worker processes alive."),
    Spec("workers_busy", "rsc_node_workers_busy", "gauge", "Worker processes running a task."),
    Spec("worker_queue", "rsc_node_worker_queue", "gauge", "Tasks waiting for a worker process."),
    Spec("worker_restarts", "rsc_node_worker_restarts", "counter",
         "Worker processes replaced (crashed, killed, recycled)."),
    Spec("worker_crashes", "rsc_node_worker_crashes", "counter", "Worker processes that crashed."),
    Spec("worker_kills", "rsc_node_worker_kills", "counter",
         "Worker processes killed for an ignored cancel or a limit."),
    Spec("worker_recycles", "rsc_node_worker_recycles", "counter",
         "Worker processes replaced after --max-tasks-per-worker tasks."),
)

#: An origin's metrics, from ``Runtime.stats()``.
ORIGIN_METRICS: tuple[Spec, ...] = (
    Spec("tasks_by_state", "rsc_origin_tasks", "gauge",
         "Remote tasks outstanding, by state (spawned, running, cancel_sent, lease_expired; "
         "init only inside a spawn call).", "state"),
    Spec("handles", "rsc_origin_handles", "gauge", "Remote handles not yet settled."),
    Spec("leases", "rsc_origin_leases", "gauge", "Leases watched (work a node holds)."),
    Spec("connections", "rsc_origin_connections", "gauge", "Connections open to nodes."),
    Spec("reconnects", "rsc_origin_reconnects", "counter",
         "Connections opened to a node that had been connected before."),
    Spec("escalations", "rsc_origin_escalations", "counter",
         "Leases that lapsed under an escalation policy."),
    Spec("retries", "rsc_origin_retries", "counter", "New attempts made by retry policies."),
    Spec("protocol_errors", "rsc_origin_protocol_errors", "counter",
         "Messages from nodes that did not fit their task's state."),
    Spec("connection_errors", "rsc_origin_connection_errors", "counter",
         "Connections closed because a node broke the protocol."),
    Spec("dropped", "rsc_origin_messages_dropped", "counter",
         "Messages ignored as stale (a result for a settled task, and such)."),
)

_NODE_OUTCOMES = ("completed", "failed", "cancelled", "panicked")
_ORIGIN_STATES = ("init", "spawned", "running", "cancel_sent", "lease_expired")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise InvalidArgument("Prometheus metrics need the prometheus-client package: "
                              "pip install 'rsc[metrics]' (or pip install prometheus-client)"
                              ) from None
    return prometheus_client


def _families(specs: Iterable[Spec], label: str, rows: Iterable[tuple[str, Mapping[str, Any]]]
              ) -> Iterator[Metric]:
    """One metric family per spec, one sample per row (``label`` = the row's
    name) that has the spec's key; a spec no row has is left out."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    rows = list(rows)
    for spec in specs:
        labels = [label] if spec.label is None else [label, spec.label]
        make = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        family = make(spec.name, spec.help, labels=labels)
        seen = False
        for name, stats in rows:
            value = stats.get(spec.key)
            if value is None:
                continue
            seen = True
            if spec.label is None:
                family.add_metric([name], float(value))
            else:
                for sub, v in value.items():
                    family.add_metric([name, sub], float(v))
        if seen:
            yield family


def _node_figures(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A STATUS_REPLY stats map with the outcome counters gathered under ``finished``."""
    out = dict(stats)
    out["finished"] = {o: stats.get(o, 0) for o in _NODE_OUTCOMES}
    return out


def node_metric_families(node_stats: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """The :data:`NODE_METRICS` families for ``node name -> STATUS_REPLY
    stats`` (what ``Runtime.status`` or ``rsc status --json`` returns), plus
    ``rsc_node_info{node,version,isolation}`` (value 1)."""
    from prometheus_client.core import GaugeMetricFamily

    rows = [(name, _node_figures(stats)) for name, stats in node_stats.items()]
    yield from _families(NODE_METRICS, "node", rows)
    info = GaugeMetricFamily("rsc_node_info", "The node's rsc version and default isolation.",
                             labels=["node", "version", "isolation"])
    for name, stats in rows:
        info.add_metric([name, str(stats.get("version", "")), str(stats.get("isolation", ""))], 1)
    yield info


def origin_metric_families(runtimes: Iterable[Runtime]) -> Iterator[Metric]:
    """The :data:`ORIGIN_METRICS` families for ``runtimes`` (each labelled
    ``origin`` = its name); every task state has a sample, 0 included."""
    rows = []
    for rt in runtimes:
        stats = rt.stats()
        stats["tasks_by_state"] = {s: stats["tasks_by_state"].get(s, 0) for s in _ORIGIN_STATES}
        rows.append((str(rt.name), stats))
    yield from _families(ORIGIN_METRICS, "origin", rows)


class _NodeCollector:
    """A node's figures at each scrape. Runs in the HTTP server's thread:
    the stats it reads are plain counters and sizes, safe to read there, so
    a scrape answers even while a computation holds the node's event loop."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield from node_metric_families({str(self.server.name): self.server.engine.stats()})


class _OriginCollector:
    """Every runtime registered in one prometheus-client registry."""

    def __init__(self) -> None:
        self.runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        yield from origin_metric_families(sorted(self.runtimes, key=lambda rt: str(rt.name)))


_ORIGIN_COLLECTORS: weakref.WeakKeyDictionary[Any, _OriginCollector] = weakref.WeakKeyDictionary()


def register(runtime: Runtime, registry: CollectorRegistry | None = None) -> None:
    """Export ``runtime``'s :data:`ORIGIN_METRICS` through ``registry``
    (default: prometheus-client's ``REGISTRY``). Several runtimes may share a
    registry (one sample each, by ``origin`` label); a runtime that is
    garbage-collected drops out. Raises ``InvalidArgument`` without
    prometheus-client."""
    prometheus = _prometheus()
    from rsc.remote import Runtime

    if not isinstance(runtime, Runtime):
        raise InvalidArgument(f"register takes an rsc.Runtime, got {type(runtime).__name__}")
    registry = prometheus.REGISTRY if registry is None else registry
    collector = _ORIGIN_COLLECTORS.get(registry)
    if collector is None:
        collector = _ORIGIN_COLLECTORS[registry] = _OriginCollector()
        registry.register(collector)
    collector.runtimes.add(runtime)


def unregister(runtime: Runtime, registry: CollectorRegistry | None = None) -> None:
    """Stop exporting ``runtime`` through ``registry`` (a no-op if it was not)."""
    prometheus = _prometheus()
    collector = _ORIGIN_COLLECTORS.get(prometheus.REGISTRY if registry is None else registry)
    if collector is not None:
        collector.runtimes.discard(runtime)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP endpoint: its ``url`` and how to stop it."""

    url: str
    close: Callable[[], None]


def serve_node_metrics(server: NodeServer, port: int, host: str = "127.0.0.1") -> MetricsEndpoint:
    """Serve ``server``'s :data:`NODE_METRICS` and the process's own
    (``process_*``: CPU seconds, memory, open files) at
    ``http://host:port/metrics`` from a thread of its own (port 0: a free
    one, see the returned ``url``). Raises ``InvalidArgument`` without
    prometheus-client or when the port cannot be bound."""
    prometheus = _prometheus()
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise InvalidArgument(f"--metrics-port must be a port from 0 to 65535, got {port!r}")
    registry = prometheus.CollectorRegistry(auto_describe=False)
    prometheus.ProcessCollector(registry=registry)
    registry.register(_NodeCollector(server))
    try:
        httpd, thread = prometheus.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise InvalidArgument(f"--metrics-port: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from None
    bound = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/metrics"
    log.info("node %s: serving Prometheus metrics at %s", server.name, url)

    def close() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5.0)

    return MetricsEndpoint(url, close)
