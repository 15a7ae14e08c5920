"""Metrics, parity, latency, reports and plots."""
