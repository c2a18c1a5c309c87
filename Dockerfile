# driftline worker / simulator / migrate image (docker-compose.yml builds it once).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed like any wheel, then the source is removed: the image runs the installed
# package only (the SQL migrations travel inside it as package data).
WORKDIR /src
COPY . /src
RUN pip install . \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data driftline \
    && mkdir -p /data \
    && chown driftline /data

# /metrics must listen beyond loopback.
ENV DRIFTLINE_DATA_DIR=/data \
    DRIFTLINE_WEB_HOST=0.0.0.0 \
    DRIFTLINE_WEB_PORT=6066

WORKDIR /data
USER driftline
EXPOSE 6066
ENTRYPOINT ["driftline"]
CMD ["worker"]
