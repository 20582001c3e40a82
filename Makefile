# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine:
# system packages (cmake, ninja, GoogleTest) via apt-get when missing, a .venv with
# torch==2.13.0 (CPU) and the test tools, an incremental CMake build in build/.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
BUILD   := build
STAMP   := .venv/.effmetrics-deps

.PHONY: demo test build sysdeps venv lint bench clean

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
	  nbclient nbformat ipykernel pyyaml
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

# Style gates: ruff for Python, clang-format (Google style, 100 columns: .clang-format) for C++.
lint: sysdeps venv
	.venv/bin/ruff check python tests bench scripts
	clang-format --dry-run --Werror csrc/*.cpp csrc/*/*.h csrc/python/*.cpp tests/cpp/*.cpp \
	  examples/*.cpp

bench: build
	$(PY) bench/overhead.py
	$(PY) bench/meta_scale.py

clean:
	rm -rf $(BUILD) python/effmetrics/_C*.so *.egg-info python/*.egg-info
