# The two commands a newcomer needs: `make up` and `make test`. Each does its own set-up.
VENV ?= .venv
export VENV

.PHONY: setup up test images down bench

setup:
	@scripts/setup.sh

up: setup
	$(VENV)/bin/claude-lab start

down:
	$(VENV)/bin/claude-lab stop

images: setup
	$(VENV)/bin/claude-lab build

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	for b in agent_start cli parallel_agents stats recording workspace experiment swarm; do $(VENV)/bin/python benchmarks/$$b.py || exit 1; done
