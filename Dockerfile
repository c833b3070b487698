# zhangben's production image (docs/going-live.md).
# Two stages: the wheels are built in the first; the second installs them into a virtual environment and
# holds no compiler, no source tree and no pip cache, and runs as a user of its own.
# Secrets are never baked in: the config and the key files are mounted read-only.
#
# BASE: any Debian bookworm image with python3 and python3-venv — the public Python image by default, or one
# made from Debian's own packages where no registry is reachable (`make test-image` does: docs/going-live.md).
# wheelhouse/: wheels pip looks at first; with --build-arg PIP_NO_INDEX=1 the only place it looks (offline).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_NO_INDEX=0
ENV PIP_FIND_LINKS=/src/wheelhouse PIP_NO_INDEX=${PIP_NO_INDEX} PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY adapters/ adapters/
COPY application/ application/
COPY bootstrap/ bootstrap/
COPY projections/ projections/
COPY api/ api/
COPY scheduler/ scheduler/
COPY sandbox/ sandbox/
COPY zhangben/ zhangben/
COPY wheelhouse/ wheelhouse/
RUN python3 -m venv /opt/build && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE}
RUN useradd --system --uid 10001 --user-group --home-dir /srv/zhangben --create-home zhangben
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/zhangben \
    && /opt/zhangben/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels zhangben \
    && rm -rf /tmp/wheels
ENV PATH=/opt/zhangben/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ZHANGBEN_CONFIG=/etc/zhangben/zhangben.toml
USER zhangben
WORKDIR /srv/zhangben
EXPOSE 8000
# /healthz answers without the database: "the process serves"; /readyz says whether it can do its work.
# ZHANGBEN_HEALTH_URL: where, when serve listens on another port (the host's network, say)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('ZHANGBEN_HEALTH_URL', 'http://127.0.0.1:8000/healthz'), timeout=2)"]
ENTRYPOINT ["zhangben"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--api-only"]
