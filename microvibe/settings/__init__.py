"""MicroVibe settings: everything comes from environment variables with sane defaults.

The embedded default (no DATABASE_*/REDIS_* set) is SQLite, the in-memory channel layer and
Celery tasks run eagerly in-process. Production sets DATABASE_* and REDIS_* (see configs/).
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

import dj_database_url

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)

_INSECURE_SECRET = "microvibe-insecure-dev-secret-change-me"
SECRET_KEY = env_str("SECRET_KEY", _INSECURE_SECRET)
JWT_SECRET = env_str("JWT_SECRET", _INSECURE_SECRET)  # checked with the other secrets at the end of this file

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if DEBUG else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "channels",
    "live",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "microvibe.urls"
ASGI_APPLICATION = "microvibe.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_env() -> dict:
    """DATABASE_URL wins; else the sources' DATABASE_HOST/...; else embedded SQLite."""
    url = env_str("DATABASE_URL", "")
    if url:
        return dj_database_url.parse(url, conn_max_age=60)
    host = env_str("DATABASE_HOST", "")
    if host:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": host,
            "PORT": env_str("DATABASE_PORT", "5432"),
            "USER": env_str("DATABASE_USER", "postgres"),
            "PASSWORD": env_str("DATABASE_PASSWORD", ""),
            "NAME": env_str("DATABASE_DBNAME", "microvibe"),
            "OPTIONS": {"sslmode": env_str("DATABASE_SSLMODE", "disable")},
            "CONN_MAX_AGE": 60,
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / "db.sqlite3"),
        # IMMEDIATE: two threads upgrading deferred transactions to writes deadlock in SQLite
        # (the web thread and the media plane's service calls write the same session rows).
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
    }


DATABASES = {"default": _database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_url_from_env() -> str:
    url = env_str("REDIS_URL", "")
    if url:
        return url
    host = env_str("REDIS_HOST", "")
    if not host:
        return ""
    password = env_str("REDIS_PASSWORD", "")
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{env_int('REDIS_PORT', 6379)}/{env_int('REDIS_DB', 0)}"


REDIS_URL = _redis_url_from_env()
# Several deployments (or test services) may share one Redis: keys and channels are prefixed.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "microvibe")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis's
            # 5 s blocking pop: the read then races the pop and a receiver dies. Read longer.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                       "prefix": f"{REDIS_KEY_PREFIX}:asgi"},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": REDIS_KEY_PREFIX}}
    CELERY_BROKER_URL = REDIS_URL
    # Services sharing one Redis (tests, several deployments) each have their own queues.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_KEY_PREFIX}:celery:"}
    CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_TASK_ALWAYS_EAGER = True

CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULE = {
    "close-stale-sessions": {"task": "live.tasks.sessions_close_stale", "schedule": 60.0},
    "recover-recordings": {"task": "live.tasks.recordings_recover", "schedule": 300.0},
    "expire-recordings-and-hls-leftovers": {"task": "live.tasks.storage_expire", "schedule": 3600.0},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# Serve app static files straight from the apps (no collectstatic needed for `make run` or tests).
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "live.envelope.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

JWT_EXPIRE = env_int("JWT_EXPIRE", 24)  # hours, as the sources
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(hours=JWT_EXPIRE),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_EXPIRE_DAYS", 7)),
    "SIGNING_KEY": JWT_SECRET,
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "MicroVibe API",
    "DESCRIPTION": "Rooms, stream keys and live sessions. Every answer is wrapped in "
    '{"code": 0, "message": "success", "data": ...}; errors carry a non-zero code.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Ports and public URLs. The STREAMING_* bases are what clients are told to use.
SERVER_PORT = env_int("SERVER_PORT", 8080)
RTMP_PORT = env_int("RTMP_PORT", 1935)
MEDIA_HTTP_PORT = env_int("MEDIA_HTTP_PORT", 8081)
PUBLIC_HOST = env_str("PUBLIC_HOST", "localhost")
STREAMING_RTMP_SERVER = env_str("STREAMING_RTMP_SERVER", f"rtmp://{PUBLIC_HOST}:{RTMP_PORT}/live")
STREAMING_RTMP_PLAY_SERVER = env_str("STREAMING_RTMP_PLAY_SERVER", STREAMING_RTMP_SERVER)
STREAMING_HLS_SERVER = env_str("STREAMING_HLS_SERVER", f"http://{PUBLIC_HOST}:{MEDIA_HTTP_PORT}/hls")
STREAMING_FLV_SERVER = env_str("STREAMING_FLV_SERVER", f"http://{PUBLIC_HOST}:{MEDIA_HTTP_PORT}/flv")
STREAMING_WHIP_SERVER = env_str("STREAMING_WHIP_SERVER", f"http://{PUBLIC_HOST}:{SERVER_PORT}/whip")
STREAMING_WHEP_SERVER = env_str("STREAMING_WHEP_SERVER", f"http://{PUBLIC_HOST}:{SERVER_PORT}/whep")
# Low-Latency HLS (media/hls/ll_from_hub.py, read by the media plane from the same variable): the
# API's play URLs name the LL playlist, which the watch page's hls.js plays in lowLatencyMode.
LLHLS_ENABLED = env_bool("LLHLS_ENABLED", False)

# Media plane switch: `manage.py serve` starts it beside Daphne unless told not to.
MEDIA_PLANE_ENABLED = env_bool("MEDIA_PLANE_ENABLED", True)

# Several media nodes (live/nodes.py): each node's id and public bases, reported in its
# heartbeat; play and push URLs of a room point at the node that holds (or is given) it.
# MEDIA_PUBLIC_HTTP is the node's base behind nginx (e.g. https://live.example.com/node/media-1:
# its /flv, /hls, /whip, /whep and room socket); unset, the STREAMING_* bases (one node).
MEDIA_NODE_ID = env_str("MEDIA_NODE_ID", "") or socket.gethostname()
MEDIA_PUBLIC_RTMP = env_str("MEDIA_PUBLIC_RTMP", STREAMING_RTMP_SERVER)
MEDIA_PUBLIC_HTTP = env_str("MEDIA_PUBLIC_HTTP", "").rstrip("/")
NODE_TIMEOUT = env_int("NODE_TIMEOUT", 10)  # s without a heartbeat: the node is lost
ALLOCATE_URL = env_str("ALLOCATE_URL", "")  # GET ?room=&owner=&kind= -> {"node": ID}; empty: least loaded
# Media nodes sweep lost nodes each second; beat does it too, for when no media node is left.
CELERY_BEAT_SCHEDULE["sweep-lost-nodes"] = {"task": "live.tasks.nodes_sweep", "schedule": max(1.0, NODE_TIMEOUT / 2)}
# Recordings: fragmented MP4 while live, a faststart MP4 + JPEG thumbnail once finalized (Celery).
RECORDINGS_PATH = env_str("RECORDINGS_PATH", str(VAR_DIR / "recordings"))
RECORDING_DEFAULT = env_bool("RECORDING_DEFAULT", False)  # a new room records unless it says otherwise
RECORDING_URL_TTL = env_int("RECORDING_URL_TTL", 3600)  # s a recording's signed file URL stays valid
# Recordings older than this many days are deleted (file and row) by a beat job; 0 keeps them all.
RECORDINGS_RETENTION_DAYS = env_int("RECORDINGS_RETENTION_DAYS", 0)
# Finished recordings in S3-compatible object storage (MinIO, SeaweedFS, AWS S3) when a bucket and
# an endpoint are set; the URLs handed out are then presigned ones. Unset: they stay in RECORDINGS_PATH.
RECORDINGS_S3_ENDPOINT_URL = env_str("RECORDINGS_S3_ENDPOINT_URL", "")
RECORDINGS_S3_BUCKET = env_str("RECORDINGS_S3_BUCKET", "")
RECORDINGS_S3_ACCESS_KEY = env_str("RECORDINGS_S3_ACCESS_KEY", "")
RECORDINGS_S3_SECRET_KEY = env_str("RECORDINGS_S3_SECRET_KEY", "")
RECORDINGS_S3_REGION = env_str("RECORDINGS_S3_REGION", "us-east-1")

# Webhooks (live/hooks.py): URLs called on each event, signed with HOOK_SECRET (HMAC-SHA256).
# on_publish and on_play are asked before a publish or play is let in (HOOK_TIMEOUT s at most);
# the others are notifications, tried HOOK_RETRIES times more with exponential backoff.
HOOK_ON_PUBLISH = env_str("HOOK_ON_PUBLISH", "")
HOOK_ON_PUBLISH_DONE = env_str("HOOK_ON_PUBLISH_DONE", "")
HOOK_ON_PLAY = env_str("HOOK_ON_PLAY", "")
HOOK_ON_PLAY_DONE = env_str("HOOK_ON_PLAY_DONE", "")
HOOK_ON_RECORD_DONE = env_str("HOOK_ON_RECORD_DONE", "")
HOOK_SECRET = env_str("HOOK_SECRET", "")
HOOK_TIMEOUT = float(env_str("HOOK_TIMEOUT", "2"))
HOOK_RETRIES = env_int("HOOK_RETRIES", 5)
HOOK_RETRY_BASE = float(env_str("HOOK_RETRY_BASE", "2"))  # s before the first retry, doubled each time
# /metrics (web port and each media node's HTTP port) answers loopback, and others with this as a
# bearer token; without one, only loopback (or bind the media port to a private address).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Where the web service is reached from outside (links in hook bodies, e.g. a recording's URL).
PUBLIC_URL = env_str("PUBLIC_URL", f"http://{PUBLIC_HOST}:{SERVER_PORT}").rstrip("/")

CHAT_MAX_LENGTH = env_int("CHAT_MAX_LENGTH", 500)
CHAT_RATE_COUNT = env_int("CHAT_RATE_COUNT", 5)  # messages ...
CHAT_RATE_WINDOW = env_int("CHAT_RATE_WINDOW", 10)  # ... per this many seconds, per user

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}

# Behind nginx (TLS there): trust its X-Forwarded-Proto so Django knows the request was HTTPS.
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
    SECURE_CONTENT_TYPE_NOSNIFF = True

os.makedirs(STATIC_ROOT, exist_ok=True)

# WebRTC SFU (sfu/). ICE binds only RTC_LISTEN_IPS (never every interface); candidates show
# RTC_ANNOUNCED_IP instead when set (1:1 NAT). A peer that vanishes is dropped after ~RTC_PEER_TIMEOUT s.
INSTALLED_APPS += ["sfu"]
RTC_ANNOUNCED_IP = env_str("RTC_ANNOUNCED_IP", "")
RTC_LISTEN_IPS = env_list("RTC_LISTEN_IPS", [RTC_ANNOUNCED_IP] if RTC_ANNOUNCED_IP else ["127.0.0.1"])
RTC_MIN_PORT = env_int("RTC_MIN_PORT", 0)  # 0: any port; else host candidates bind in MIN..MAX
RTC_MAX_PORT = env_int("RTC_MAX_PORT", 0)
RTC_PEER_TIMEOUT = env_int("RTC_PEER_TIMEOUT", 15)
RTC_KEYFRAME_INTERVAL = env_int("RTC_KEYFRAME_INTERVAL_MS", 300) / 1000  # at most one PLI upstream per this
# A publisher's codecs, preferred first: H.264 passes to HLS/FLV/RTMP without a transcode.
RTC_VIDEO_CODECS = env_list("RTC_VIDEO_CODECS", ["H264", "VP8"])
RTC_AUDIO_CODECS = env_list("RTC_AUDIO_CODECS", ["opus"])
RTC_STUN_URLS = env_list("RTC_STUN_URLS", [])  # told to clients, e.g. stun:stun.example.org:3478
RTC_TURN_URLS = env_list("RTC_TURN_URLS", [])  # e.g. turn:turn.example.org:3478?transport=udp
RTC_TURN_SECRET = env_str("RTC_TURN_SECRET", "")  # coturn static-auth-secret (REST API credentials)
RTC_TURN_TTL = env_int("RTC_TURN_TTL", 86400)
ROOM_MAX_PEERS = env_int("ROOM_MAX_PEERS", 4)

# Last, once every secret is read: with DEBUG off, refuse a weak SECRET_KEY/JWT_SECRET and any secret still
# holding configs/env.example's CHANGE_ME placeholder, naming every offending variable in one error.
if not DEBUG:
    from .secrets_check import secrets_check

    secrets_check({
        "SECRET_KEY": SECRET_KEY, "JWT_SECRET": JWT_SECRET,
        "DATABASE_PASSWORD": env_str("DATABASE_PASSWORD", ""), "DATABASE_URL": env_str("DATABASE_URL", ""),
        "REDIS_PASSWORD": env_str("REDIS_PASSWORD", ""), "REDIS_URL": env_str("REDIS_URL", ""),
        "RTC_TURN_SECRET": RTC_TURN_SECRET, "METRICS_TOKEN": METRICS_TOKEN, "HOOK_SECRET": HOOK_SECRET,
        "RECORDINGS_S3_SECRET_KEY": RECORDINGS_S3_SECRET_KEY,
    }, strong=("SECRET_KEY", "JWT_SECRET"), insecure=(_INSECURE_SECRET,))
