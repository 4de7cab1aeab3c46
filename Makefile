# railproxy — every build, test and benchmark goes through here.
#
# One profile (release) and one feature set for everything, so Pingora compiles once per
# machine: `make test`, `make demo` and `make bench` share target/release.

CARGO      ?= cargo
CARGOFLAGS ?= --release --locked
CORPUS     ?= ../shared/corpus/dev
BIN        := target/release/railproxy

# Debian packages the build needs (cmake: zlib-ng inside Pingora), the tests run (a real Redis,
# Ansible for the fleet playbook, Prometheus and promtool for the monitoring files, iproute2 for the
# emulated long link's namespaces) and the demo uses.
BUILD_PACKAGES := cmake pkg-config
TEST_PACKAGES := redis-server ansible-core prometheus iproute2 chromium
DEMO_PACKAGES := curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test lint fmt bench bench-wan bench-hostile fuzz audit clean help demo demo-stop

all: build

help:
	@echo "make demo    build, then start backend + origin + edge on loopback and show deltas"
	@echo "make demo-stop"
	@echo "make test    build and run every test (what CI runs, with make lint)"
	@echo "make audit   cargo audit against the RustSec database (and cargo deny when installed)"
	@echo "make bench   codec figures, then railproxy beside nginx (wrk, ~10 min); reports in target/bench/"
	@echo "make bench-wan  railproxy beside nginx across emulated long links (root, TUN; ~70 min)"
	@echo "make bench-hostile  attacks on railproxy and nginx beside bystanders (BEFORE=old binary; ~5 min)"
	@echo "make lint    cargo fmt --check and clippy -D warnings"
	@echo "make fuzz    run each fuzz target for FUZZ_SECONDS (default 60)"

# Installs missing Debian packages; a no-op when everything is there.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PACKAGES))

build: deps
	$(CARGO) build $(CARGOFLAGS) --workspace

test: deps
	$(call apt_install,$(TEST_PACKAGES))
	@if [ -d "$(CORPUS)" ]; then echo "corpus: $(CORPUS) found: tests run on generated page versions and on the real corpus"; \
	 else echo "corpus: $(CORPUS) not found: tests run on generated page versions only"; fi
	# Every test binary runs even after one fails, so that one run reports every failure; then
	# the families that do not depend on how the tunnel is reached run again with the origins
	# dialling out to the edge (tunnel.dial) instead of listening.
	$(CARGO) test $(CARGOFLAGS) --workspace --no-fail-fast; dial_in=$$?; \
	  echo "== the same families over dial-out tunnels: $(DIAL_OUT_FAMILIES)"; \
	  RAILPROXY_TEST_TUNNEL=dial-out $(CARGO) test $(CARGOFLAGS) -p integration --no-fail-fast \
	    $(addprefix --test ,$(DIAL_OUT_FAMILIES)); dial_out=$$?; \
	  exit $$(( dial_in | dial_out ))

# Test families run a second time over dial-out tunnels by `make test`. The others test how
# origins are reached by their listeners (failover, probes, the listener's TLS and framing)
# or the long link (its own topology).
DIAL_OUT_FAMILIES := end_to_end request_bodies request_buffering streams personal upgrade cache \
  unchanged limits http1_interop https shared_store websocket

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGOFLAGS) --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

demo: build
	$(call apt_install,$(DEMO_PACKAGES))
	@scripts/demo.sh

demo-stop:
	@scripts/demo.sh stop

# Everything the issues ask to measure, from one run: the codec per source (beside gzip -6 and
# zstd -3), then railproxy beside nginx on the same backend and pages, and memory. Reports are
# kept in target/bench/. BENCH_SECONDS sets the length of each load run.
BENCH_PACKAGES := wrk zstd gzip
BENCH_SECONDS ?= 5
bench: build
	$(call apt_install,$(BENCH_PACKAGES))
	@command -v nginx >/dev/null || { echo "installing Debian package: nginx-light"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light >/dev/null; }
	@mkdir -p target/bench
	@if [ ! -d "$(CORPUS)" ]; then echo "no corpus at $(CORPUS): generated page versions stand in (set CORPUS=DIR)"; fi
	@echo "== codec: railproxy delta bench $(CORPUS), one core (taskset -c 1)"
	@if [ -d "$(CORPUS)" ]; then taskset -c 1 $(BIN) delta bench $(CORPUS) | tee target/bench/codec.md; fi
	@echo
	@echo "== proxies: target/release/railproxy-proxybench --corpus $(CORPUS) --seconds $(BENCH_SECONDS)"
	@target/release/railproxy-proxybench --corpus $(CORPUS) --seconds $(BENCH_SECONDS) | tee target/bench/proxies.md

# railproxy beside nginx two hops (plain, gzip 1 and gzip 6 between them) across an emulated long
# link (integration/src/link.rs), on three links (and a fourth for the 2 MB downloads alone),
# each with cubic and with bbr set on every connection across it: needs root for the network
# namespaces and /dev/net/tun, and says so
# (skipping) without them. About 70 minutes (steady phases of 1,000 requests); reports in
# target/bench/wan.md.
bench-wan: build
	$(call apt_install,iproute2 procps slowhttptest)
	@command -v nginx >/dev/null || { echo "installing Debian package: nginx-light"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light >/dev/null; }
	@mkdir -p target/bench
	@echo "== target/release/railproxy-wanbench --corpus $(CORPUS)"
	@{ target/release/railproxy-wanbench --corpus $(CORPUS); echo $$? > target/bench/wan.rc; } | tee target/bench/wan.md; \
	  rc=$$(cat target/bench/wan.rc); if [ "$$rc" = 77 ]; then echo "bench-wan skipped (see above)"; else exit $$rc; fi

# Each attack of the "one client never hurts another" family against railproxy and against nginx
# in front of the same backend, bystanders beside them, then memory under 5,000 connections;
# BEFORE=path/to/railproxy adds an earlier build's column. About 5 minutes; report in
# target/bench/hostile.md.
BEFORE ?=
bench-hostile: build
	$(call apt_install,iproute2)
	@command -v nginx >/dev/null || { echo "installing Debian package: nginx-light"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light >/dev/null; }
	@mkdir -p target/bench
	@echo "== target/release/railproxy-hostilebench $(if $(BEFORE),--before $(BEFORE))"
	@target/release/railproxy-hostilebench $(if $(BEFORE),--before $(BEFORE)) | tee target/bench/hostile.md

FUZZ_SECONDS ?= 60
# crate-dir:target. The proxy's targets link the whole proxy (Pingora): the first build is slow.
FUZZ_TARGETS := delta/fuzz:decode_raw delta/fuzz:round_trip delta/fuzz:available_dictionary \
	proxy/fuzz:config proxy/fuzz:values
# Each target runs from its seeds plus what earlier runs found; a crash fails the target.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	@mkdir -p target
	@for spec in $(FUZZ_TARGETS); do \
	  dir=$${spec%%:*}; t=$${spec##*:}; \
	  mkdir -p $$dir/corpus/$$t; log=target/fuzz-$$t.log; \
	  if RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir $$dir $$t $$dir/corpus/$$t $$dir/seeds/$$t \
	       -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >$$log 2>&1; then st=ok; else st=FAILED; fi; \
	  runs=$$(grep -o 'number_of_executed_units: [0-9]*' $$log | tail -1 | cut -d' ' -f2); \
	  echo "fuzz $$t: $$st, $${runs:-0} executions in $(FUZZ_SECONDS) s (log: $$log)"; \
	  if [ $$st = FAILED ]; then grep -E 'panicked|ERROR|SUMMARY|Test unit written' $$log; exit 1; fi; \
	done

ADVISORY_DB ?= ../shared/advisory-db
# Fails on any known vulnerability in Cargo.lock. Offline against a local copy of the RustSec
# database when there is one, else cargo audit fetches it.
audit:
	@command -v cargo-audit >/dev/null || $(CARGO) install --locked cargo-audit
	@if [ -d "$(ADVISORY_DB)" ]; then echo "audit: advisory database $(ADVISORY_DB)"; \
	  $(CARGO) audit --db $(ADVISORY_DB) --no-fetch; \
	 else echo "audit: $(ADVISORY_DB) not found, fetching the RustSec database"; $(CARGO) audit; fi
	@if command -v cargo-deny >/dev/null; then $(CARGO) deny --offline check licenses bans sources; \
	 else echo "audit: cargo-deny not installed, deny.toml not checked (cargo install --locked cargo-deny)"; fi

clean:
	$(CARGO) clean
