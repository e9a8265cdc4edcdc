# Two commands for a newcomer: `make setup` (optional) and `make test`.
# Works on a fresh machine with only Python 3.11 and pip: uv is installed with pip when missing,
# then the locked environment (uv.lock) is synced into .venv.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif
PYTEST_ARGS ?= -n 2

.PHONY: setup test envs-check lock clean

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5"
	$(UV) sync --locked

test: setup
	$(UV) run pytest $(PYTEST_ARGS)

envs-check: setup
	$(UV) run icrl envs check

lock:
	$(UV) lock

clean:
	rm -rf .venv .pytest_cache
