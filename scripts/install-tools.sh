#!/usr/bin/env bash
# Installs the real servers the integration tests run against into ./.tools/bin:
# versitygw (S3-compatible store), consul (dev agent) and toxiproxy (fault proxy).
# A tool that already reports the pinned version is not rebuilt.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/.tools/bin"
mkdir -p "$bin"

VERSITYGW_VERSION=v1.8.0
CONSUL_VERSION=v1.16.3
TOXIPROXY_VERSION=v2.12.0

# go install does not stamp versions into these binaries, so each build
# records the pinned version in <name>.version beside the binary.
has_version() { # name version
  [ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]
}

if has_version versitygw "$VERSITYGW_VERSION"; then
  echo "versitygw ${VERSITYGW_VERSION}: present"
else
  echo "versitygw ${VERSITYGW_VERSION}: building"
  GOBIN="$bin" go install "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}"
  echo "$VERSITYGW_VERSION" >"$bin/versitygw.version"
fi

if has_version consul "$CONSUL_VERSION"; then
  echo "consul ${CONSUL_VERSION}: present"
else
  echo "consul ${CONSUL_VERSION}: building (about 4 minutes from a cold cache)"
  # Consul cannot be 'go install'ed (replace directives); it builds from its own
  # tools module whose go.sum is committed so no checksum lookups are needed.
  (cd "$top/tools/consul" && go build -trimpath -o "$bin/consul" github.com/hashicorp/consul)
  echo "$CONSUL_VERSION" >"$bin/consul.version"
fi

if has_version toxiproxy-server "$TOXIPROXY_VERSION"; then
  echo "toxiproxy ${TOXIPROXY_VERSION}: present"
else
  echo "toxiproxy ${TOXIPROXY_VERSION}: building"
  tmp=$(mktemp -d)
  GOBIN="$tmp" go install "github.com/Shopify/toxiproxy/v2/cmd/server@${TOXIPROXY_VERSION}"
  mv "$tmp/server" "$bin/toxiproxy-server"
  rmdir "$tmp"
  echo "$TOXIPROXY_VERSION" >"$bin/toxiproxy-server.version"
fi
