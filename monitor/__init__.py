"""drift-monitor: label and prediction drift of ML models as Prometheus metrics."""
