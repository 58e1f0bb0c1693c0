"""Anomaly detector with auto-pause: robust z-scores on latency, execution, P&L and freshness (feature I)."""
