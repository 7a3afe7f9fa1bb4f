# syntax=docker/dockerfile:1
# The ferricflowd daemon image. Build it from the repository root:
#
#   docker build -t ferricflowd:0.1.0 .
#
# Your handler code goes into an image of your own built FROM this one (README, "Deployment"):
#
#   FROM ferricflowd:0.1.0
#   COPY myapp/ /app/myapp/
#
# The supervisor runs as PID 1: it handles SIGTERM itself (drain, then exit) and reaps every
# child, orphans and the embedded redis-server included, so no init shim (tini) is needed.

# redis-server for the embedded store (no store.url in the config: one-container dev setups).
# 7.2 is the last BSD-licensed Redis line; its bookworm build links what the base below has.
FROM redis:7.2.7-bookworm AS redis

# Build stage: install the package from this checkout (a regular install, not -e) and its
# dependencies into a venv that the runtime stage copies as it is; importing flow.store
# proves the Lua scripts (package data) were installed.
FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ferricflowd/ ferricflowd/
RUN python -m venv /opt/ferricflowd \
    && /opt/ferricflowd/bin/pip install /src \
    && /opt/ferricflowd/bin/python -c "import ferricflowd.flow.store"

FROM python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0 AS runtime
COPY --from=redis /usr/local/bin/redis-server /usr/local/bin/redis-cli /usr/local/bin/
COPY --from=build /opt/ferricflowd /opt/ferricflowd
# A fixed numeric uid/gid, so runAsNonRoot can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 ferricflowd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin ferricflowd \
    && mkdir -p /app /etc/ferricflowd /var/lib/ferricflowd \
    && chown 10001:10001 /var/lib/ferricflowd \
    && redis-server --version \
    && /opt/ferricflowd/bin/ferricflowd --help > /dev/null
# LISTEN: the kubelet, Docker's health check and Prometheus cannot reach loopback.
# PYTHONPATH: handler modules COPY'd under /app import as top-level packages (myapp.flows).
ENV PATH=/opt/ferricflowd/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FERRICFLOWD_DAEMON_LISTEN=0.0.0.0:9464 \
    FERRICFLOWD_DAEMON_DATA_DIR=/var/lib/ferricflowd
WORKDIR /app
USER 10001:10001
EXPOSE 9464
# /healthz: the supervisor loop is alive. No curl in a slim image; the venv's python is here.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['FERRICFLOWD_DAEMON_LISTEN'].rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# docker stop waits 10s by default, less than drain_timeout (30s): run with --stop-timeout 45.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ferricflowd"]
CMD ["run", "--config", "/etc/ferricflowd/flows.toml"]
