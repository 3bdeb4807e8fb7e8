# MicroVibe: `make run` starts everything on the embedded default; `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DJANGO_SETTINGS_MODULE := microvibe.settings

# Debian packages the tests drive as real clients and servers.
TEST_TOOLS := ffmpeg postgresql redis-server chromium chromium-driver coturn nginx-light
TEST_TOOL_BINS := /usr/bin/ffmpeg /usr/bin/ffprobe /usr/bin/redis-server /usr/bin/chromium /usr/bin/chromedriver \
	/usr/bin/turnserver /usr/sbin/nginx

.PHONY: run setup admin test test-tools lint bench soak clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0

run: setup
	$(PY) manage.py serve

admin: setup
	$(PY) manage.py createsuperuser

test-tools:
	@missing=0; for bin in $(TEST_TOOL_BINS); do [ -x $$bin ] || missing=1; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	if [ $$missing = 1 ]; then \
	  echo "installing test tools: $(TEST_TOOLS)"; \
	  apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_TOOLS) >/dev/null; \
	fi

test: $(STAMP) test-tools
	$(PY) -m ruff check .
	$(PY) -m pytest -q
ifeq ($(CI),true)
	@echo "== again on PostgreSQL + Redis (CI); test_production (its own PostgreSQL and Redis) and test_turn (no database) ran above =="
	$(PY) -m tests.support.with_services -- $(PY) -m pytest -q --deselect tests/e2e/test_production.py \
	  --deselect tests/e2e/test_turn.py
endif

# Figures for docs/benchmarks.md: RTMP/FLV fan-out against nginx-rtmp, then the SFU, then the
# RTMP <-> WebRTC bridges (next to the fan-out and HLS figures the first step wrote to bench/out/),
# then the transcoding bridges' CPU against an ffmpeg command line, then recording (against
# nginx-rtmp's record all, and finalizing against ffmpeg's faststart remux), then several media
# nodes (streams held by one node vs two, publish to first frame through nginx vs straight), then how far
# behind live each way of watching plays in Chromium (LL-HLS, HLS, nginx-rtmp's HLS, HTTP-FLV).
bench: $(STAMP) test-tools
	$(PY) -m bench
	$(PY) -m bench.hls_serve
	$(PY) -m bench.llhls
	$(PY) -m bench.sfu
	$(PY) -m bench.bridges
	$(PY) -m bench.transcode
	$(PY) -m bench.record
	$(PY) -m bench.nodes
	$(PY) -m bench.latency

# Soak, not in CI (an hour, and it loads the machine): 4 publishers (3 RTMP, 1 WHIP), 100 RTMP + 50 HTTP-FLV
# readers, 20 HLS players and 10 WHEP viewers joining and leaving all the time, a publisher SIGKILLed and
# restarted every 10 minutes; per-minute RSS, fds, threads and CPU of the server, PASS/FAIL verdicts, and the
# "Soak" section of docs/benchmarks.md (bench/soak.py; `python -m bench.soak --minutes 3 --kill-every 1
# --no-doc` for a quick look).
soak: $(STAMP) test-tools
	$(PY) -m bench.soak

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) var

# Backups (microvibe/backup.py): `make backup` writes BACKUP_DIR/microvibe-backup-<UTC time>.tar, a pg_dump -Fc
# of the database the settings point at (DATABASE_URL or DATABASE_HOST/..., from the environment as for the
# service) and the files under RECORDINGS_PATH; `make restore FILE=...` puts both back (pg_restore --clean).
# With the Docker Compose stack add COMPOSE=1: the compose `backup` service does it inside the stack's network
# (its image has the PostgreSQL 16 client), the archive directory mounted from the host.
BACKUP_DIR ?= var/backups
.PHONY: backup restore

ifeq ($(COMPOSE),1)
backup:
	mkdir -p $(BACKUP_DIR)
	docker compose run --rm -v "$(abspath $(BACKUP_DIR)):/backups" backup backup --dir /backups

restore:
	@test -f "$(FILE)" || { echo "usage: make restore COMPOSE=1 FILE=var/backups/microvibe-backup-....tar"; exit 2; }
	docker compose run --rm -v "$(abspath $(dir $(FILE))):/backups:ro" backup restore "/backups/$(notdir $(FILE))"
else
backup: $(STAMP)
	$(PY) -m microvibe.backup backup --dir $(BACKUP_DIR)

restore: $(STAMP)
	@test -f "$(FILE)" || { echo "usage: make restore FILE=var/backups/microvibe-backup-....tar"; exit 2; }
	$(PY) -m microvibe.backup restore "$(FILE)"
endif
