# Two commands: `make repro` (the whole pipeline on the embedded corpus) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export TQDM_MININTERVAL ?= 5

.PHONY: install repro repro-lab test test-fast bench clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: these machines hold the 2.13.0 CPU wheel; a plain `torch` pulls CUDA.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# A current stamp does not prove the venv still holds every package: check (one line, exit 2).
install: $(STAMP)
	@$(BIN)/python scripts/check_venv.py pyproject.toml

# The headline tier (M1 few-shot, UCPR main, CPAC main, the qualitative page: <= 10 min on 2 cores)
# and the full lab catalog (every suite and continuation). Both are `dvc repro` of DVC targets.
HEADLINE_TARGETS := report qualitative_cpac

define dvc_prelude
	@git rev-parse --git-dir >/dev/null 2>&1 || { git init -q && git add -A && \
	  git -c user.name=nepa3d-bench -c user.email=bench@localhost commit -qm "initial snapshot"; }
	@[ -f .dvc/config ] || { $(BIN)/dvc init -q && $(BIN)/dvc config core.analytics false; }
	@$(BIN)/python -m benchmark dvc-stages --check   # dvc.yaml's suite stages match the suites
endef

repro: install
	$(dvc_prelude)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro $(HEADLINE_TARGETS)
	@echo
	@echo "Reports (generated results logs):"; ls -1 $(abspath reports)/*.md

repro-lab: install
	$(dvc_prelude)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo
	@echo "Reports (generated results logs):"; ls -1 $(abspath reports)/*.md $(abspath reports)/lab/*.md

# scripts/ci/install_slurm.sh: slurm-wlm + munge for tests/test_cluster_slurm.py (as root with apt-get;
# no-op when installed, else the test skips saying why).
test: install
	@scripts/ci/install_slurm.sh
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python scripts/bench/bench_preprocess.py
	$(BIN)/python scripts/bench/bench_eval.py
