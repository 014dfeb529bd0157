# cdc-sync daemon image. Build: docker build -t cdc-sync .
# Run:   docker run --rm -e CRM_DSN=... -e HUB_DSN=... -v $PWD/config:/config cdc-sync \
#            run -c /config/examples/pg_to_pg.yaml
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /nonexistent cdcsync
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cdc_sync ./cdc_sync
COPY migrations ./migrations
RUN pip install --no-cache-dir . && rm -rf /root/.cache
USER cdcsync
STOPSIGNAL SIGTERM
ENTRYPOINT ["cdc-sync"]
CMD ["--help"]
