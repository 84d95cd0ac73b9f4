#!/usr/bin/env bash
# Builds and installs kmsagent with the embedded local KMS, creates a demo
# master key, and serves the KMS on 127.0.0.1:8443 (Huawei KMS v1.0 API).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
go build -ldflags "-X main.version=$(git describe --always --dirty 2>/dev/null || echo dev)" -o /usr/local/sbin/kmsagent ./cmd/kmsagent
install -d -m 0755 /etc/kmsagent
[ -f /etc/kmsagent/agent.toml ] || install -m 0644 packaging/agent.toml.example /etc/kmsagent/agent.toml
if ! kmsagent kms describe-key demo >/dev/null 2>&1; then
  kmsagent kms create-key --alias demo --description "demo key made by install.sh"
fi
kmsagent kms list-keys
