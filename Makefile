# monlight: the commands a new user needs. `make demo` and `make test`
# install what is missing (scripts/install-deps.sh), build, and run.

BUILD_DIR ?= build
SANITIZE_DIR ?= build-sanitize
TSAN_DIR ?= build-tsan
PREFIX ?= /usr/local
CMAKE_FLAGS ?=
PYTHON := .venv/bin/python

.PHONY: all deps build demo test test-c test-sanitize test-tsan test-receiver \
        test-python test-lua test-ruby test-install test-abi test-fuzz bench \
        install clean

all: build

deps:
	@./scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR)

demo: build
	@./scripts/demo.sh

# Every suite; each one prints its own pass/fail summary.
test: build
	@./scripts/run-tests.sh

test-c: build
	@cd $(BUILD_DIR) && ctest --output-on-failure

# The C tests again under AddressSanitizer + UndefinedBehaviorSanitizer,
# then under ThreadSanitizer.
test-sanitize: deps
	@cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DMONLIGHT_BUILD_LUA=OFF \
	  -DCMAKE_C_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" >/dev/null
	@cmake --build $(SANITIZE_DIR)
	@cd $(SANITIZE_DIR) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure

test-tsan: deps
	@cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DMONLIGHT_BUILD_LUA=OFF -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" >/dev/null
	@cmake --build $(TSAN_DIR)
	@cd $(TSAN_DIR) && TSAN_OPTIONS="halt_on_error=1 die_after_fork=0" ctest --output-on-failure

test-receiver: deps
	@$(PYTHON) -m pytest -q tests/receiver

test-python: build
	@./bindings/python/run-tests.sh

test-lua: build
	@./bindings/lua/run-tests.sh

test-ruby: build
	@./bindings/ruby/run-tests.sh

bench: deps
	@./bench/run.sh

install: build
	@cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(TSAN_DIR)
