# CGO_CFLAGS must reach mattn/go-sqlite3 for every build and test: it enables
# the sqlite_dbpage virtual table the follower applies pages through. Setting
# CGO_CFLAGS replaces Go's default, so -O2 -g are repeated here.
export CGO_CFLAGS := -O2 -g -DSQLITE_ENABLE_DBPAGE_VTAB
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.Version=$(VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 25m

.PHONY: build tools test unit bench bench-peers demo clean

build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/understudy ./cmd/understudy

tools:
	./scripts/install-tools.sh

# Every unit and integration test. Integration tests start the real servers
# from ./.tools/bin and the binary from ./bin.
test: tools build
	UNDERSTUDY_BIN=$(CURDIR)/bin/understudy UNDERSTUDY_TOOLS_BIN=$(TOOLS_BIN) go test $(GO_TEST_FLAGS) ./...

unit:
	go test $(GO_TEST_FLAGS) -short ./...

bench: tools build
	UNDERSTUDY_BIN=$(CURDIR)/bin/understudy UNDERSTUDY_TOOLS_BIN=$(TOOLS_BIN) ./bench/run.sh

# The primary, restore, follower (alone and beside Litestream 0.5 restore -f,
# over a file replica and versitygw) and footprint benchmarks with Litestream
# 0.5 and 0.3 beside understudy, in one run (BENCH_ROUNDS=2 repeats the
# whole set: A B A B where the machine's speed drifts). LITESTREAM05 and
# LITESTREAM03 are built binaries (never committed); bench/RESULTS.md says
# how they were built.
BENCH_ROUNDS ?= 1
bench-peers: tools build
	@test -x "$(LITESTREAM05)" -a -x "$(LITESTREAM03)" || { echo "usage: make bench-peers LITESTREAM05=PATH LITESTREAM03=PATH (Litestream 0.5.16 and 0.3.13 binaries)" >&2; exit 2; }
	for round in $$(seq $(BENCH_ROUNDS)); do \
	  echo "## round $$round at $$(git rev-parse --short HEAD)"; \
	  UNDERSTUDY_BIN=$(CURDIR)/bin/understudy UNDERSTUDY_TOOLS_BIN=$(TOOLS_BIN) AWS_CA_BUNDLE= \
	  UNDERSTUDY_BENCH_LITESTREAM05=$(LITESTREAM05) UNDERSTUDY_BENCH_LITESTREAM03=$(LITESTREAM03) \
	  BENCH_RUN='TestPrimaryBench$$|TestPrimaryLargeBench$$|TestRestoreBench$$|TestFollowerBench$$|TestFollowerPeersBench$$|TestFootprintBench$$' \
	  ./bench/run.sh || exit 1; \
	done

clean:
	rm -rf bin

# A live demo on the embedded default: a sample database with a writer, a
# file replica in a temp directory and a follower. Ctrl-C stops and cleans up.
demo: build
	go run ./scripts/demo -bin ./bin/understudy

# A Debian package in ./dist: the binary, the systemd units of each role and
# the sample config (packaging/build-deb.sh; needs dpkg-deb).
.PHONY: deb
deb: build
	BIN=$(CURDIR)/bin/understudy ./packaging/build-deb.sh
