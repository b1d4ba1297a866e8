# Two entry points, each doing all the set-up it needs on a fresh machine:
#   make run    train on the built-in synthetic dataset with caching and metrics on
#   make test   lint, format check and the whole test suite
# TORCH_SPEC is installed before anything that depends on torch. The default is the
# CPU wheel of the reference machine; on a GPU machine install any recent torch into
# .venv first (or set TORCH_SPEC) and it is kept.
# The tests wrap datasets with torchvision transforms. When torchvision is not already
# importable, the release matching torch (2.N -> 0.N+15) is unpacked apart, in
# .venv/torchvision-tests, which only the tests put on their path: PyPI's Linux wheels
# are CUDA builds that would break `import torchvision`, and with it Lightning, beside
# a CPU torch (see tests/adaptive_cache/torchvision_import.py).
export TORCHVISION_FOR_TORCH = import torch; v = torch.__version__.split("+")[0].split("."); print(f"0.{int(v[1]) + 15}.{v[2]}")
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint system-deps bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,bench]"
	$(BIN)/python -c "import torchvision" 2>/dev/null || $(BIN)/pip install -q --no-deps --upgrade \
		--target $(VENV)/torchvision-tests "torchvision==$$($(BIN)/python -c "$$TORCHVISION_FOR_TORCH")" \
		|| echo "no torchvision for this torch: the tests that use it will be skipped"
	touch $(STAMP)

# Servers the tests start for real (Redis, Prometheus with promtool). Debian package
# names; root is needed only when they are missing.
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null; then \
		echo "installing redis-server and prometheus from Debian packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server prometheus; \
	fi

run: $(STAMP)
	$(BIN)/adaptive-cache train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) system-deps lint
	promtool check rules monitoring/prometheus/rules.yml
	promtool test rules monitoring/prometheus/tests/*.yml
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/adaptive-cache bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
