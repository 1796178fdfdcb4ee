"""HTTP doubles of Prometheus, Tempo, Loki and Grafana, an OpenMetrics exporter, scenarios."""
