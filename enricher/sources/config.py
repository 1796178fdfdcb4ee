"""Configuration of the evidence backends, declared beside the clients that use it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SourcesConfig(BaseModel):
    """Where Prometheus, Tempo, Loki and Grafana live. Filled in by the evidence issue."""

    model_config = ConfigDict(extra="forbid")

