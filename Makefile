# CGO_CFLAGS must reach mattn/go-sqlite3 for every build and test: it enables
# the sqlite_dbpage virtual table the follower applies pages through. Setting
# CGO_CFLAGS replaces Go's default, so -O2 -g are repeated here.
export CGO_CFLAGS := -O2 -g -DSQLITE_ENABLE_DBPAGE_VTAB
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.Version=$(VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 25m

.PHONY: build tools test unit bench demo clean

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
