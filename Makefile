# Convenience front end (QEMU's habit): ./configure once, then make targets.
-include Makefile.config
BUILD_DIR ?= build
NINJA ?= ninja

.PHONY: all check check-unit check-iotests bench demo clean distclean
all: $(BUILD_DIR)/build.ninja
	$(NINJA) -C $(BUILD_DIR)

# A fresh machine gets its packages first (scripts/install-deps.sh is idempotent).
$(BUILD_DIR)/build.ninja:
	scripts/install-deps.sh
	./configure --builddir=$(BUILD_DIR)

check: check-unit check-iotests

check-unit: all
	meson test -C $(BUILD_DIR) --suite unit --print-errorlogs --num-processes 2

# The iotests run under every engine; see tests/qemu-iotests/check-matrix.
check-iotests: all
	@if [ -x tests/qemu-iotests/check-matrix ]; then \
		BUILD_DIR=$(abspath $(BUILD_DIR)) tests/qemu-iotests/check-matrix; \
	else echo "check-iotests: no iotests yet"; fi

bench: all
	@if [ -x bench/run ]; then BUILD_DIR=$(abspath $(BUILD_DIR)) bench/run $(BENCH_ARGS); \
	else echo "bench: not yet"; fi

# The README's main job: a short engine comparison on a scratch image.
demo: all
	BUILD_DIR=$(abspath $(BUILD_DIR)) scripts/demo.sh

clean:
	-$(NINJA) -C $(BUILD_DIR) clean

distclean:
	rm -rf $(BUILD_DIR) Makefile.config
