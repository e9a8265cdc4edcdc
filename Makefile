# Two commands for a newcomer: `make setup` (optional) and `make test`.
# Works on a fresh machine with only Python 3.11 and pip: uv is installed with pip when missing
# (into .uv/, a venv of its own, where the system Python refuses pip installs: PEP 668), then the
# locked environment (uv.lock) is synced into .venv.

PYTHON ?= python3
# Recursive (=), so recipes that run after the `uv` target see the uv it installed.
UV = $(or $(shell command -v uv 2>/dev/null),$(wildcard .uv/bin/uv),$(PYTHON) -m uv)
PYTEST_ARGS ?= -n 2

.PHONY: uv setup test envs-check lock clean quickstart quickstart-procgen

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv>=0.5" 2>/dev/null || \
		{ $(PYTHON) -m venv .uv && .uv/bin/pip install --quiet "uv>=0.5"; }

setup: uv
	$(UV) sync --locked

test: setup
	$(UV) run pytest $(PYTEST_ARGS)

# The quickstart: oracle data for 6 MiniHack train tasks, an NLD-format sample converted into a store,
# the 1M preset trained on bursty sequences, then few-shot evaluation on 2 held-out tasks with the
# baselines (Hashmap keyed on the screen and on the agent's cell). Every step resumes or skips what an earlier run made; outputs go to runs/quickstart/.
QS := data/quickstart
QS_EVAL_TASKS := MiniHack-MazeWalk-15x15-v0 MiniHack-Labyrinth-Small-v0

quickstart: setup
	$(UV) run icrl collect --recipe datasets/quickstart-train.yaml
	$(UV) run icrl collect --recipe datasets/quickstart-mazes.yaml
	$(UV) run icrl collect --recipe datasets/quickstart-demos.yaml
	test -f $(QS)/nld-aa/seeds.json || $(UV) run icrl nld sample --out $(QS)/nld-aa --games 6
	test -f $(QS)/nld.db || $(UV) run icrl nld index --aa $(QS)/nld-aa --db $(QS)/nld.db
	$(UV) run icrl nld convert --db $(QS)/nld.db --dataset nld-aa --out $(QS)/nld-store --segment-length 64 --quiet
	$(UV) run icrl train experiments/quickstart.yaml --resume
	$(UV) run icrl eval runs/quickstart --demos $(QS)/minihack-heldout-demos --tasks $(QS_EVAL_TASKS) \
		--shots 0,1,2 --primary-k 1 --levels 32 --episodes 5 --sticky 0.2 --max-steps 128 --greedy \
		--methods icl,hashmap,hashmap-cell,random,expert

# The Procgen quickstart: search-expert data for the 12 Procgen train games and demos of the 4
# held-out ones, the 1M preset with its RGB encoder trained on bursty sequences, then few-shot
# evaluation with the baselines (Hashmap, R&P, random). The model samples its actions: greedy, it played
# mostly one action (jumper 1-shot success 6% against 20% sampled). The search expert is left out for time
# (1-7 s a rollout); its figures on these levels are its demos'. Outputs go to runs/quickstart-procgen/.
QSP := data/quickstart-procgen
QSP_EVAL_TASKS := procgen:climber procgen:ninja procgen:plunder procgen:jumper

quickstart-procgen: setup
	$(UV) run icrl collect --recipe datasets/quickstart-procgen-train.yaml
	$(UV) run icrl collect --recipe datasets/quickstart-procgen-demos.yaml
	$(UV) run icrl train experiments/quickstart-procgen.yaml --resume
	$(UV) run icrl eval runs/quickstart-procgen --suite procgen --demos $(QSP)/procgen-heldout-demos \
		--tasks $(QSP_EVAL_TASKS) --shots 0,1 --primary-k 1 --levels 16 --episodes 5 --sticky 0.2 \
		--max-steps 128 --methods icl,hashmap,rnp,random

envs-check: setup
	$(UV) run icrl envs check

lock:
	$(UV) lock

clean:
	rm -rf .venv .uv .pytest_cache
