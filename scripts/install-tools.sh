#!/usr/bin/env bash
# Installs the real servers the integration tests run against into ./.tools/bin:
# versitygw (S3-compatible store), consul (dev agent), toxiproxy (fault proxy),
# fake-gcs-server (Google Cloud Storage emulator), Azurite (Azure Storage emulator).
# A tool that already reports the pinned version is not rebuilt.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/.tools/bin"
mkdir -p "$bin"

VERSITYGW_VERSION=v1.8.0
CONSUL_VERSION=v1.16.3
TOXIPROXY_VERSION=v2.12.0
# fake-gcs-server v1.56.1 honours ifGenerationMatch=0 on multipart and
# resumable uploads, the two the Go SDK uses (internal/storage/gcs tests pin both).
FAKE_GCS_VERSION=v1.56.1
# Azurite (the Azure Storage emulator, an npm package) for the abs tests.
AZURITE_VERSION=3.37.0

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

# sshd for the SFTP tests: Debian 12's openssh-server, unpacked without root
# (apt-get download, else the archive's pool, then dpkg-deb -x) into
# .tools/openssh and run by the tests as an unprivileged process on a
# loopback port. libwrap0 is the one library it links that a machine without
# openssh-server lacks. Each .deb is checked against its pinned SHA-256.
OPENSSH_DEB_VERSION=1:9.2p1-2+deb12u10
install_sshd() {
  local debs=(
    "openssh-server $OPENSSH_DEB_VERSION main/o/openssh/openssh-server_9.2p1-2+deb12u10_amd64.deb 933cd92a2329f9bf26d22660a834ae18ebdbe8df9c6127e4d9fcb098dac9cf72"
    "libwrap0 7.6.q-32 main/t/tcp-wrappers/libwrap0_7.6.q-32_amd64.deb cbce2669a3ba4d74cfdc52b14f38014893e23d85a33d109a3422c342eefc55f8"
  )
  if [ "$(uname -m)" != x86_64 ] || ! command -v dpkg-deb >/dev/null; then
    echo "sshd ${OPENSSH_DEB_VERSION}: skipped (needs Debian's dpkg-deb on amd64); the SFTP tests will skip" >&2
    return 0
  fi
  local tmp dest d name version pool sum file
  # The physical path: the wrapper below must not depend on a symlink to .tools.
  dest="$(cd "$top/.tools" && pwd -P)/openssh"
  tmp=$(mktemp -d)
  rm -rf "$dest" && mkdir -p "$dest" "$tmp/apt"
  for d in "${debs[@]}"; do
    read -r name version pool sum <<<"$d"
    file="$tmp/$(basename "$pool")"
    (cd "$tmp/apt" && apt-get download -q "$name=$version" >/dev/null 2>&1 && mv ./"${name}"_*.deb "$file") ||
      curl -fsSL -o "$file" "https://deb.debian.org/debian/pool/$pool" || {
      echo "sshd: cannot download $name $version (pinned in scripts/install-tools.sh; bump the pin if Debian dropped it)" >&2
      exit 1
    }
    echo "$sum  $file" | sha256sum -c --quiet - || { echo "sshd: $name $version does not match its pinned SHA-256" >&2; exit 1; }
    dpkg-deb -x "$file" "$dest"
  done
  rm -rf "$tmp"
  # sshd re-executes itself by the path it was started with, which must be
  # absolute: the wrapper execs it by its absolute path.
  cat >"$bin/sshd" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$dest/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/usr/sbin/sshd" "\$@"
WRAPPER
  chmod +x "$bin/sshd"
  local missing
  missing=$(LD_LIBRARY_PATH="$dest/usr/lib/x86_64-linux-gnu" ldd "$dest/usr/sbin/sshd" | grep 'not found' || true)
  if [ -n "$missing" ]; then
    echo "sshd: libraries missing on this machine:" >&2
    echo "$missing" >&2
    exit 1
  fi
  echo "$OPENSSH_DEB_VERSION" >"$bin/sshd.version"
}
if has_version sshd "$OPENSSH_DEB_VERSION"; then
  echo "sshd ${OPENSSH_DEB_VERSION}: present"
else
  echo "sshd ${OPENSSH_DEB_VERSION}: unpacking Debian's openssh-server"
  install_sshd
fi

if has_version fake-gcs-server "$FAKE_GCS_VERSION"; then
  echo "fake-gcs-server ${FAKE_GCS_VERSION}: present"
else
  echo "fake-gcs-server ${FAKE_GCS_VERSION}: building"
  GOBIN="$bin" go install "github.com/fsouza/fake-gcs-server@${FAKE_GCS_VERSION}"
  echo "$FAKE_GCS_VERSION" >"$bin/fake-gcs-server.version"
fi

# Azurite runs on the machine's Node.js: npm installs it into .tools/azurite
# and a wrapper starts its blob service. Without Node.js it is skipped (the
# Azure Blob tests then skip, and fail under CI=true).
if has_version azurite-blob "$AZURITE_VERSION"; then
  echo "azurite ${AZURITE_VERSION}: present"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "azurite ${AZURITE_VERSION}: skipped (needs Node.js and npm); the Azure Blob tests will skip" >&2
else
  echo "azurite ${AZURITE_VERSION}: installing with npm"
  azurite_dir="$(cd "$top/.tools" && pwd -P)/azurite"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --ignore-scripts --loglevel=error "azurite@${AZURITE_VERSION}"
  cat >"$bin/azurite-blob" <<WRAPPER
#!/bin/sh
exec node "$azurite_dir/node_modules/azurite/dist/src/blob/main.js" "\$@"
WRAPPER
  chmod +x "$bin/azurite-blob"
  echo "$AZURITE_VERSION" >"$bin/azurite-blob.version"
fi
