# cdc-sync daemon image (see docs/service.md). Build: docker build -t cdc-sync .
# Run:  docker run -d --name cdc-sync -v /etc/cdc-sync:/config:ro -p 9187:9187 cdc-sync
#       (the config sets `metrics: {listen: "0.0.0.0:9187"}` for the health check)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cdc_sync ./cdc_sync
COPY migrations ./migrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# No state on disk (checkpoints live in the target database): a plain non-root user.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent cdcsync
COPY --from=build /install /usr/local
USER 10001
ENV CDC_SYNC_CONFIG=/config/config.yaml \
    CDC_SYNC_HEALTH_URL=http://127.0.0.1:9187/healthz \
    PYTHONUNBUFFERED=1
# /healthz answers 200 while every pipeline streams, idles healthily or stands by for the
# lease; it needs `metrics.listen` in the config (set CDC_SYNC_HEALTH_URL to match it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; sys.exit(0 if u.urlopen(os.environ['CDC_SYNC_HEALTH_URL'], timeout=4).status == 200 else 1)"]
# Exec form: the daemon is PID 1 and gets SIGTERM itself (drain, commit, release the lease).
STOPSIGNAL SIGTERM
ENTRYPOINT ["cdc-sync"]
CMD ["run"]
