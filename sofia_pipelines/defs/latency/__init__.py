"""Latency (A): the latency heatmap and the route table."""
