# catalog-sync: keeps an Open edX LMS's course overviews in sync with the catalog.
# `make help` lists the targets.

# A Python 3.12 interpreter: PYTHON_BIN if set, else python3.12 on PATH, else pyenv's (scripts/find-python).
PYTHON_BIN ?=
VENV       := .venv
PY         := $(VENV)/bin/python
MANAGE     := $(PY) manage.py
STAMP      := $(VENV)/.installed
# The Celery app and the WSGI application refuse to start without DJANGO_SETTINGS_MODULE; the
# make targets are the laptop's entry points, so they default to development settings, like manage.py.
DEV_SETTINGS := DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-settings.dev}

.DEFAULT_GOAL := help
.PHONY: help install demo test lint run web worker beat consumer standin bench soak mutation migrate clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@set -e; interp=$$(PYTHON_BIN="$(PYTHON_BIN)" sh scripts/find-python); \
	if ! { test -x $(PY) && $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; }; then \
	  rm -rf $(VENV); echo "creating $(VENV) with $$interp"; "$$interp" -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv/ with the project and its test and dev tools (idempotent)

migrate: install ## manage.py migrate: every table, the database cache's included (DATABASE_URL, default SQLite under var/)
	$(MANAGE) migrate --noinput

demo: install ## the whole pipeline end to end on embedded defaults, with a summary
	$(PY) scripts/demo.py

test: install ## the whole suite (integration tests on three stacks); starts Redis, PostgreSQL, RabbitMQ if silent
	$(PY) scripts/services.py ensure
	$(PY) -m pytest -q -p no:cacheprovider

lint: install ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

web: migrate ## the web process alone (admin + API) on 127.0.0.1:8000
	$(MANAGE) runserver 127.0.0.1:8000

worker: migrate ## one Celery worker in the foreground
	$(DEV_SETTINGS) $(VENV)/bin/celery -A tasks worker --loglevel=INFO -Q catalog.refresh,catalog.sweep,celery

beat: migrate ## Celery beat in the foreground
	$(DEV_SETTINGS) $(VENV)/bin/celery -A tasks beat --loglevel=INFO

# The event bus consumer: Studio's COURSE_CATALOG_INFO_CHANGED from Redis Streams (README "Event bus").
CONSUMER_GROUP ?= catalog-sync
CONSUMER_NAME  ?= $(shell hostname)
consumer: migrate ## the event bus consumer in the foreground (needs EVENT_BUS_REDIS_CONNECTION_URL)
	@test -n "$$EVENT_BUS_REDIS_CONNECTION_URL" || { echo "make consumer: set EVENT_BUS_REDIS_CONNECTION_URL (e.g. redis://127.0.0.1:6379/0), and EVENT_BUS_TOPIC_PREFIX as Studio has it"; exit 1; }
	$(MANAGE) consume_events -t course-catalog-info-changed -g $(CONSUMER_GROUP) --extra '{"consumer_name": "$(CONSUMER_NAME)"}'

run: migrate ## web + worker + beat (+ the event bus consumer when EVENT_BUS_REDIS_CONNECTION_URL is set)
	$(DEV_SETTINGS) $(PY) scripts/run.py

standin: install ## the bundled stand-in catalog on 127.0.0.1:8765 (settings.dev's default catalog)
	$(PY) -m standin --port 8765 --courses 3200 --write-lms-records var/standin-courses.jsonl

bench: install ## benchmarks: prints a table, writes bench/results/*.json
	$(PY) scripts/services.py ensure redis postgres
	$(PY) bench/run.py

soak: install ## chaos soak, ~5 minutes (not in CI): faults, kills, publishes; one PASS/FAIL line (SOAK_ARGS="--stack embedded")
	nice $(PY) scripts/soak.py $(SOAK_ARGS)

mutation: install ## mutation testing of sync, mapping, retry, throttle, sweep (mutmut, unit tests; ~10 min): kill rate
	rm -rf mutants && mkdir -p var
	nice $(VENV)/bin/mutmut run --max-children $${MUTATION_JOBS:-2} > var/mutation.log 2>&1 || { tail -n 40 var/mutation.log; exit 1; }
	$(PY) scripts/mutation_summary.py

clean: ## remove var/ (local database, embedded broker)
	rm -rf var/
