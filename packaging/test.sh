#!/usr/bin/env bash
# Runs the whole test suite: installs its dependencies, then vet and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
bash packaging/setup-dev.sh
export PATH="/opt/kmsagent-tools/bin:$PATH"
go vet ./...
go test -count=1 -timeout 15m ./...
