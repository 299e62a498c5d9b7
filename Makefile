# The two commands of README.md. Each installs what it needs (idempotent; a second run skips the set-up).
.PHONY: demo test setup lint

setup:
	hack/bootstrap-python.sh

demo: setup
	.venv/bin/relora demo --out relora-demo

test: setup
	bash hack/build-k8s.sh >/dev/null
	.venv/bin/ruff check relora_contract relora_worker operator tests bench
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check relora_contract relora_worker operator tests bench
