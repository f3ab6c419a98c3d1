# workerpool build. `make` builds the libraries, `make check` runs the
# test suite on both backends, `make demo` runs the example.
# SANITIZE=address,undefined or SANITIZE=thread builds everything with
# that sanitizer into its own directory.

# The version is the header's, so that the two cannot disagree.
VERSION := $(shell sed -n 's/^\#define WP_VERSION_STRING "\(.*\)"/\1/p' \
	include/workerpool.h)
SOVERSION := 0
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

CC ?= cc
OPT ?= -O2
CFLAGS ?= $(OPT) -g
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
BASE := -std=gnu11 -D_GNU_SOURCE -pthread -Iinclude -Isrc $(WARN)

comma := ,
ifdef SANITIZE
BUILD := build/$(subst $(comma),-,$(SANITIZE))
SANFLAGS := -fsanitize=$(SANITIZE) -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
else
BUILD := build/default
endif

# Only the library's own objects see WP_BUILDING_LIBRARY, so only the
# documented API is exported from the shared object.
LIBFLAGS := -DWP_BUILDING_LIBRARY -fvisibility=hidden -fPIC

PKGS := liburing
DEPS_OK := $(BUILD)/.deps
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)

SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
HDRS := include/workerpool.h $(wildcard src/*.h)
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
TEST_HDRS := $(wildcard tests/*.h)

STATIC := $(BUILD)/libworkerpool.a
SHARED := $(BUILD)/libworkerpool.so.$(VERSION)

.PHONY: all check demo examples install clean deps FORCE
all: $(STATIC) $(SHARED) $(BUILD)/workerpool.pc

deps $(DEPS_OK):
	@sh scripts/deps.sh
	@mkdir -p $(BUILD) && touch $(DEPS_OK)

$(BUILD)/obj/%.o: src/%.c $(HDRS) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(LIBFLAGS) $(PKG_CFLAGS) $(CFLAGS) $(SANFLAGS) -c $< -o $@

$(STATIC): $(OBJS)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(OBJS) src/workerpool.map
	$(CC) -shared -Wl,-soname,libworkerpool.so.$(SOVERSION) \
		-Wl,--version-script=src/workerpool.map $(SANFLAGS) \
		-o $@ $(OBJS) $(PKG_LIBS) -pthread
	ln -sf libworkerpool.so.$(VERSION) $(BUILD)/libworkerpool.so.$(SOVERSION)
	ln -sf libworkerpool.so.$(VERSION) $(BUILD)/libworkerpool.so

# Rewritten whenever the install paths differ from the last build's.
PC_PATHS := $(PREFIX):$(LIBDIR):$(INCLUDEDIR)
$(BUILD)/.pc-paths: FORCE
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = "$(PC_PATHS)" ] || echo "$(PC_PATHS)" > $@

$(BUILD)/workerpool.pc: workerpool.pc.in Makefile $(BUILD)/.pc-paths
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    $< > $@

# Tests link the static library so that internal fault hooks stay hidden
# from the shared object.
$(BUILD)/tests/%: tests/%.c $(TEST_HDRS) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(CHECK_CFLAGS) $(CFLAGS) $(SANFLAGS) $< -o $@ \
		$(STATIC) $(PKG_LIBS) $(CHECK_LIBS) -lm

# A copy of the library with its pause points in (src/pause.h), for the
# tests that force an interleaving; the library built for use has none.
PAUSE_OBJS := $(SRCS:src/%.c=$(BUILD)/pause/%.o)
PAUSE_STATIC := $(BUILD)/libworkerpool-pause.a

$(BUILD)/pause/%.o: src/%.c $(HDRS) | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(LIBFLAGS) -DWP_PAUSE_POINTS $(PKG_CFLAGS) $(CFLAGS) \
		$(SANFLAGS) -c $< -o $@

$(PAUSE_STATIC): $(PAUSE_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/test_races: tests/test_races.c $(TEST_HDRS) src/pause.h \
		$(PAUSE_STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) -DWP_PAUSE_POINTS $(CHECK_CFLAGS) $(CFLAGS) $(SANFLAGS) \
		$< -o $@ $(PAUSE_STATIC) $(PKG_LIBS) $(CHECK_LIBS) -lm

# Every test program runs each of its tests once per backend.
check: $(TESTS)
	@sh scripts/run-tests.sh $(TESTS)

$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(BASE) $(CFLAGS) $(SANFLAGS) $< -o $@ $(STATIC) $(PKG_LIBS)

demo: $(BUILD)/examples/demo
	$(BUILD)/examples/demo

EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
examples: $(EXAMPLES)

install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 644 include/workerpool.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libworkerpool.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/libworkerpool.so.$(SOVERSION)
	ln -sf libworkerpool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libworkerpool.so
	install -m 644 $(BUILD)/workerpool.pc $(DESTDIR)$(LIBDIR)/pkgconfig/

clean:
	rm -rf build

# The benchmark program and its comparison run live in bench/.
-include bench/bench.mk

# Stress runs and the fuzzer live beside the tests.
-include tests/reliability.mk
