# The benchmark. `make bench` builds bench/bench.c on this library and
# the libuv reference program of the same scenarios, runs both in turn
# and prints one table (scripts/bench.sh); `make bench-chart` draws the
# results as an SVG (scripts/bench-chart.sh).
#
# The reference is read from SHARED_DIR/peers, SHARED_DIR being the
# shared/ directory beside this repository unless given. (SHARED itself
# names the shared library above.)

SHARED_DIR ?= ../shared
BENCH_PEER := $(SHARED_DIR)/peers/uvpool.c
BENCH_BIN := $(BUILD)/bench/bench
BENCH_UV := $(BUILD)/bench/uvpool
BENCH_UV_OK := $(BUILD)/.deps-libuv
BENCH_RESULTS := build/bench/results.txt

.PHONY: bench bench-build bench-chart

bench-build: $(BENCH_BIN) $(BENCH_UV)

# Linked statically, like the tests, so the program measures the build
# it sits beside rather than whatever libworkerpool.so is installed.
$(BENCH_BIN): bench/bench.c include/workerpool.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(CFLAGS) $(SANFLAGS) $< -o $@ $(STATIC) $(PKG_LIBS)

$(BENCH_UV_OK):
	@sh scripts/deps.sh libuv1-dev
	@mkdir -p $(dir $@) && touch $@

# The reference gets the same optimisation flags as this library.
$(BENCH_UV): $(BENCH_PEER) | $(BENCH_UV_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SANFLAGS) -o $@ $< \
		$$(pkg-config --cflags --libs libuv) -lpthread

bench: bench-build
	@sh scripts/bench.sh $(BENCH_BIN) $(BENCH_UV) $(BENCH_RESULTS)

bench-chart:
	@sh scripts/bench-chart.sh $(BENCH_RESULTS)
