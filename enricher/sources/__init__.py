"""Backends the evidence comes from: one module per backend (prometheus, tempo, loki, deploys)."""
