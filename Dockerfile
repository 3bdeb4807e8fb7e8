# The MicroVibe image: every app service of docker-compose.yml (web, media nodes, worker, beat, migrate,
# certs, backup) runs it with its own command.
FROM python:3.11-slim-bookworm

# The PostgreSQL client must be as new as the server for pg_dump (`make backup`): 16, as compose's
# postgres:16, from PostgreSQL's own apt repository (Debian bookworm ships 15). Change both together.
ARG PG_MAJOR=16

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=microvibe.settings

# ffmpeg: the command-line tools next to PyAV (probing and remuxing by hand on a server).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl ffmpeg; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    . /etc/os-release; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y --auto-remove curl; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# Only the code: no tests, benches, local .env or virtualenv from the build context end up in the image.
COPY manage.py ./
COPY microvibe/ microvibe/
COPY live/ live/
COPY media/ media/
COPY rtmp/ rtmp/
COPY sfu/ sfu/

# A non-root user owns only what it writes: VAR_DIR (static files, local state) and the volume mount points,
# whose ownership a new named volume copies from the image.
RUN set -eux; \
    useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin microvibe; \
    DEBUG=1 python manage.py collectstatic --noinput -v 0; \
    install -d -o microvibe -g microvibe /var/lib/microvibe/hls /var/lib/microvibe/recordings \
        /var/lib/microvibe/beat /var/lib/microvibe/certs; \
    chown -R microvibe:microvibe /app/var
USER microvibe

# 8080 web (Daphne), 8090 a media node's Daphne, 8081 its FLV/HLS server, 1935 RTMP; the WebRTC UDP range
# is each node's own (RTC_MIN_PORT-RTC_MAX_PORT, published in docker-compose.yml).
EXPOSE 8080 8081 8090 1935
CMD ["python", "manage.py", "serve"]
