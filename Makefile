# Two commands on a fresh machine:  `make demo` (the main job) and `make test` (the tests, offline).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Qwen models for the demo: Hub ids or local folders (the same variables the CLI reads).
QUESTION ?= How does Matryoshka truncation change an embedding?

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first: a bare `torch` requirement resolved by pip pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/qwen3-rag index cookbook/data --db $(VENV)/demo-db
	$(BIN)/qwen3-rag ask "$(QUESTION)" --db $(VENV)/demo-db

# The real-vLLM tests start servers from a separate virtualenv, built once per machine (cached outside the checkout).
test: install
	bash .ci/vllm-setup.sh > $(VENV)/vllm-python
	QWEN3_RAG_VLLM_PYTHON="$$(cat $(VENV)/vllm-python)" QWEN3_RAG_REQUIRE_RAY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
