"""Prometheus counters and histograms of the server (``GET /metrics``).
"""





class Metrics:
    """Prometheus counters and histograms in a registry of this server's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("twotower_http_requests_total", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.errors = Counter("twotower_http_errors_total",
                              "HTTP requests answered with a status >= 400",
                              ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "twotower_http_request_duration_seconds", "time from request headers to the "
            "last byte of the response", ["endpoint"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0))
        self.batch_requests = Histogram(
            "twotower_u2i_batch_requests", "/u2i-by-user requests answered per batch",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.in_progress = Gauge("twotower_http_requests_in_progress",
                                 "index-work requests being served", registry=self.registry)
        self.connections = Gauge("twotower_http_connections_open", "open TCP connections",
                                 registry=self.registry)
        self.dropped = Counter("twotower_http_connections_dropped_total",
                               "connections closed by a limit", ["reason"],
                               registry=self.registry)

        self.reloads = Counter("twotower_index_reloads_total",
                               "reloads of the served folder, by result (success: swapped "
                               "in; failure: refused, the old index kept serving)",
                               ["result"], registry=self.registry)
        self.reload_seconds = Histogram(
            "twotower_index_reload_seconds", "time to load, check and swap in a new "
            "export (refused ones too)", registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
        for result in ("success", "failure"):
            self.reloads.labels(result)

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
