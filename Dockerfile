# driftline worker / simulator / migrate image (docker-compose.yml builds it once).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data driftline \
    && mkdir -p /data \
    && chown driftline /data

# streams/store/migrate.py finds supabase/migrations relative to the source tree, so the
# source tree (not the installed copy) is what runs. /metrics must listen beyond loopback.
ENV PYTHONPATH=/app \
    DRIFTLINE_DATA_DIR=/data \
    DRIFTLINE_WEB_HOST=0.0.0.0 \
    DRIFTLINE_WEB_PORT=6066

USER driftline
EXPOSE 6066
ENTRYPOINT ["driftline"]
CMD ["worker"]
