# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine:
# system packages (cmake, ninja, GoogleTest) via apt-get when missing, a .venv with
# torch==2.13.0 (CPU) and the test tools, an incremental CMake build in build/.
# `make test-compat` (run by .ci/run after `make test`) proves the other end of the supported
# range: torch $(COMPAT_TORCH) in .venv-compat, effmetrics installed there by pip.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
BUILD   := build
STAMP   := .venv/.effmetrics-deps

# The counting and API tests, run against every torch the project is tested with (test-compat).
COMPAT_TESTS := tests/python/test_api.py tests/python/test_flop_counter.py \
  tests/python/test_params.py tests/python/test_vit_oracle.py tests/python/test_zoo.py \
  tests/python/test_memory.py tests/python/test_time.py tests/python/test_timing.py \
  tests/python/test_compile.py tests/python/test_hf.py tests/python/test_counter.py \
  tests/python/test_rules.py tests/python/test_effective.py tests/python/test_predict.py
COMPAT_TORCH := 2.14.1
COMPAT_VENV  := .venv-compat
COMPAT_PY    := $(COMPAT_VENV)/bin/python
COMPAT_PIP   := $(COMPAT_VENV)/bin/pip
COMPAT_STAMP := $(COMPAT_VENV)/.effmetrics-deps
COMPAT_INST  := $(COMPAT_VENV)/.effmetrics-installed
COMPAT_BUILD := build-compat
# What the installed package is built from: a change here reinstalls it (CMake then rebuilds
# only what changed, in $(COMPAT_BUILD)/cmake).
PKG_SOURCES  := CMakeLists.txt setup.py pyproject.toml cmake/torch_paths.py \
  $(shell find csrc python/effmetrics -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.py' \
    -o -name '*.pyi' -o -name py.typed \) -not -path '*/__pycache__/*')

.PHONY: demo test test-compat build sysdeps venv lint bench clean

demo: build
	$(PY) -m effmetrics demo --out out

test: build lint
	cd $(BUILD) && ctest --output-on-failure
	$(PY) -m pytest -q tests/python

sysdeps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v ninja >/dev/null || missing="$$missing ninja-build"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	[ -f /usr/include/gtest/gtest.h ] || missing="$$missing libgtest-dev"; \
	command -v clang-format >/dev/null || missing="$$missing clang-format"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# The CPU build of torch (a CUDA build would be several GB): pinned, from the local index.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q numpy pandas matplotlib pytest ruff pybind11 setuptools wheel \
	  nbclient nbformat ipykernel pyyaml transformers
	# NVTX3 headers (header-only) for machines without the CUDA toolkit
	$(PIP) install -q nvidia-nvtx
	touch $(STAMP)

venv: $(STAMP)

# CMake builds the core, the extension (into python/effmetrics/), the tests and the example;
# a .pth file in the venv puts python/ on its path (what an editable install does, without a
# second build).
build: sysdeps venv
	cmake -S . -B $(BUILD) -G Ninja -DPython3_EXECUTABLE=$(abspath $(PY)) >/dev/null
	cmake --build $(BUILD) -j 2
	@$(PY) -c "import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], \
	  'effmetrics-dev.pth').write_text('$(abspath python)\n')"

# ---- test-compat: torch $(COMPAT_TORCH) (a CUDA build from the local index; it runs on CPU) in a
# second venv, effmetrics installed into it the README's way (pip install --no-build-isolation .,
# C++20 since torch 2.14's headers need it: CMakeLists.txt), then $(COMPAT_TESTS) against that
# installed copy. setuptools and CMake work in $(COMPAT_BUILD)/, never in build/ or python/.
$(COMPAT_STAMP): pyproject.toml Makefile
	test -x $(COMPAT_PY) || python3 -m venv $(COMPAT_VENV)
	$(COMPAT_PIP) install -q --upgrade pip
	$(COMPAT_PIP) install -q torch==$(COMPAT_TORCH)
	$(COMPAT_PIP) install -q numpy pandas matplotlib pytest "pybind11>=2.10" "setuptools>=77" wheel \
	  transformers nvidia-nvtx
	touch $(COMPAT_STAMP)

$(COMPAT_INST): $(COMPAT_STAMP) $(PKG_SOURCES)
	EFFMETRICS_BUILD_BASE=$(COMPAT_BUILD) EFFMETRICS_JOBS=2 CMAKE_GENERATOR=Ninja \
	  $(COMPAT_PIP) install -q --no-build-isolation .
	touch $(COMPAT_INST)

# GoogleTest too, in the CMake tree pip just used (its core is built: only the tests compile, ~1.5
# min on 2 cores). Then pytest, which imports effmetrics before it starts and fails unless that is
# the installed copy (the source tree's python/ is never on this venv's path; this proves it).
test-compat: sysdeps $(COMPAT_INST)
	cmake -S . -B $(COMPAT_BUILD)/cmake -DEFFMETRICS_BUILD_TESTS=ON >/dev/null
	cmake --build $(COMPAT_BUILD)/cmake -j 2
	cd $(COMPAT_BUILD)/cmake && ctest --output-on-failure
	$(COMPAT_PY) -c "import sys, torch, effmetrics, effmetrics._C, pytest; \
	  print('test-compat: torch', torch.__version__, '| effmetrics from', effmetrics._C.__file__); \
	  venv = '$(abspath $(COMPAT_VENV))/'; \
	  ok = all(m.__file__.startswith(venv) for m in (effmetrics, effmetrics._C)); \
	  sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + sys.argv[1:]) if ok \
	           else 'test-compat: effmetrics is not the copy installed in $(COMPAT_VENV)')" \
	  $(COMPAT_TESTS)

# Style gates: ruff for Python, clang-format (Google style, 100 columns: .clang-format) for C++.
lint: sysdeps venv
	.venv/bin/ruff check python tests bench scripts
	clang-format --dry-run --Werror csrc/*.cpp csrc/*/*.h csrc/python/*.cpp tests/cpp/*.cpp \
	  examples/*.cpp

bench: build
	$(PY) bench/overhead.py
	$(PY) bench/meta_scale.py

clean:
	rm -rf $(BUILD) $(COMPAT_BUILD) build-pip $(COMPAT_INST) python/effmetrics/_C*.so \
	  *.egg-info python/*.egg-info
