# Reliability runs beyond `make check`, included by the Makefile.
#
# `make stress` runs the stress, signal and shutdown tests at full size on
# both backends: 10 million events on 10,000 handles, 5 million under a
# signal storm, 1,000 shutdown cycles. `make check` runs the same binaries
# at the sizes they default to, which suit CI and the sanitizers.
#
# `make fuzz` builds the API fuzzer with clang, libFuzzer, ASan and UBSan
# (the library too, into build/fuzz/) and runs it for FUZZ_SECONDS; the
# first byte of each input picks the backend, so one run covers both.

STRESS_EVENTS ?= 10000000
STRESS_HANDLES ?= 10000
SIGNAL_EVENTS ?= 5000000
SHUTDOWN_CYCLES ?= 1000

STRESS_TESTS := $(addprefix $(BUILD)/tests/, \
	test_stress test_signals test_shutdown)

.PHONY: stress fuzz
stress: $(STRESS_TESTS)
	@WP_STRESS_EVENTS=$(STRESS_EVENTS) \
	 WP_STRESS_HANDLES=$(STRESS_HANDLES) \
	 WP_SIGNAL_EVENTS=$(SIGNAL_EVENTS) \
	 WP_SHUTDOWN_CYCLES=$(SHUTDOWN_CYCLES) \
	 sh scripts/run-tests.sh $(STRESS_TESTS)

FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang-14
FUZZ_BUILD := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
FUZZ_CFLAGS := -O1 -g $(FUZZ_SAN)
FUZZ_OBJS := $(SRCS:src/%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BIN := $(FUZZ_BUILD)/fuzz_api
FUZZ_OK := $(FUZZ_BUILD)/.clang

$(FUZZ_OK):
	@sh scripts/deps.sh $(FUZZ_CC):$(FUZZ_CC)
	@mkdir -p $(FUZZ_BUILD) && touch $@

# The library's objects are built as the Makefile builds them, with the
# fuzzer's coverage instrumentation and sanitizers added.
$(FUZZ_BUILD)/obj/%.o: src/%.c $(HDRS) | $(DEPS_OK) $(FUZZ_OK)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(BASE) $(LIBFLAGS) $(PKG_CFLAGS) $(FUZZ_CFLAGS) \
		-fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BIN): fuzz/fuzz_api.c include/workerpool.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(BASE) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< \
		$(FUZZ_OBJS) $(PKG_LIBS) -o $@

fuzz: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
		-max_len=256 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_BUILD)/ $(FUZZ_BUILD)/corpus
