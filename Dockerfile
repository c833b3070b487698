# zhangben's production image (docs/going-live.md).
# Two stages: the wheels are built in the first; the second installs them and
# holds no compiler, no source tree and no pip cache, and runs as a user of its own.
# Secrets are never baked in: the config and the key files are mounted read-only.

FROM python:3.11-slim-bookworm AS build
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
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /srv/zhangben --create-home zhangben
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels zhangben && rm -rf /tmp/wheels
USER zhangben
WORKDIR /srv/zhangben
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ZHANGBEN_CONFIG=/etc/zhangben/zhangben.toml
EXPOSE 8000
# /healthz answers without the database: "the process serves"; /readyz says whether it can do its work
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["zhangben"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", "--api-only"]
