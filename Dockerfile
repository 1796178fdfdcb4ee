# alert-enricher service image. Build from the repository root:
#   docker build -t alert-enricher .
# compose/docker-compose.yml builds it as the `enricher` service.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# pyproject names README.md as the package readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY enricher/ ./enricher/
RUN pip install . && rm -rf /src

# Non-root, with a data directory it owns: a named volume mounted at /data starts out with
# this ownership, so the SQLite store is writable.
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin enricher \
    && mkdir -p /data /etc/enricher \
    && chown enricher:enricher /data
USER enricher
WORKDIR /data
VOLUME ["/data"]

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2); sys.exit(0)"]

ENTRYPOINT ["enricher"]
CMD ["serve", "--config", "/etc/enricher/enricher.yaml"]
