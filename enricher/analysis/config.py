"""Configuration of the root-cause stage (`analysis:` in the YAML file).

The deterministic analyzer needs no settings and always runs. The LLM stage runs only when
`analysis.llm` is set; every bound it has (timeouts, retries, token budgets, the circuit
breaker) is here so an operator can see what a model call may cost a page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from enricher.durations import Seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMConfig(_Model):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama,
    LiteLLM). `base_url` is the part before `/chat/completions`, e.g.
    `http://ollama:11434/v1`."""

    base_url: AnyHttpUrl
    model: str = Field(min_length=1)
    api_key: str | None = None
    api_key_file: Path | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: Seconds = 5.0
    first_token_timeout: Seconds = 20.0
    total_timeout: Seconds = 60.0
    max_retries: int = Field(default=2, ge=0, le=10)
    # Exponential backoff between retries (openai-python's numbers), unless the server says
    # how long to wait (`retry-after-ms`, `Retry-After`). Never past the caller's deadline.
    backoff_base: Seconds = 0.5
    backoff_max: Seconds = 8.0
    # Input token budget of one call; a bundle above it is analysed in chunks (scatter-gather).
    max_input_tokens: int = Field(default=6000, ge=500)
    max_output_tokens: int = Field(default=800, ge=50)
    # OpenAI deprecates `max_tokens` (reasoning models reject it); local servers still expect it.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    stream: bool = True
    # Cheaper model for the chunk (map) calls; the judgement call uses `model`.
    chunk_model: str | None = None
    chunk_concurrency: int = Field(default=4, ge=1, le=64)
    # Scatter-gather never fans out wider than this; items past the last chunk are listed
    # in `LLMInfo.omitted_ids`, never silently ignored.
    max_chunks: int = Field(default=8, ge=1, le=64)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset: Seconds = 60.0
    cache_size: int = Field(default=512, ge=0)

    @model_validator(mode="after")
    def _load_key(self) -> LLMConfig:
        if self.api_key_file is not None:
            try:
                self.api_key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read api_key_file {self.api_key_file}: {exc.strerror}"
                ) from None
        return self

    @property
    def url(self) -> str:
        return str(self.base_url).rstrip("/")


class AnalysisConfig(_Model):
    llm: LLMConfig | None = None
