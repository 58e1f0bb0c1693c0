"""The runtime's Prometheus metrics, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.decisions = Counter("sofia_decisions", "EV-gate decisions", ["strategy", "result"], registry=r)
        self.blocks = Counter("sofia_limit_blocks", "intents the gate passed and a risk limit blocked",
                              ["strategy"], registry=r)
        self.orders = Counter("sofia_orders", "orders sent, by venue and outcome", ["venue", "outcome"], registry=r)
        self.fills = Counter("sofia_fills", "fills received", ["venue", "liquidity"], registry=r)
        self.cancels = Counter("sofia_cancels", "cancels sent", ["venue"], registry=r)
        self.errors = Counter("sofia_errors", "errors, by kind", ["kind"], registry=r)
        self.decision_to_order = Histogram("sofia_decision_to_order_seconds",
                                           "from the start of a decision to the venue's acknowledgement of the order",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.decision_seconds = Histogram("sofia_decision_seconds", "gate and limits for one intent",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.fsync_seconds = Histogram("sofia_journal_fsync_seconds", "journal flush+fsync before an order is sent",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.pnl = Gauge("sofia_pnl_usd", "net P&L marked to mid since start of the journal", registry=r)
        self.paused = Gauge("sofia_paused", "1 while the pause control file is set", registry=r)
        self.market_lag = Gauge("sofia_market_time_ms", "market time of the last event processed", registry=r)
