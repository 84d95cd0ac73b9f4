#!/usr/bin/env bash
# Runs the whole test suite: installs its dependencies, checks that the
# module is tidy and the code is vet- and staticcheck-clean, runs every test
# (root tests and the qemu VM tests included), then runs the packages with
# concurrency again under the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
bash packaging/setup-dev.sh
export PATH="/opt/kmsagent-tools/bin:$PATH"
if ! go mod tidy -diff >/dev/null; then
  echo "test.sh: go.mod/go.sum are not tidy; run go mod tidy and commit" >&2
  go mod tidy -diff >&2 || true
  exit 1
fi
go vet ./...
staticcheck ./...
go test -count=1 -timeout 15m ./...
# The race detector slows code down 5-10x: it runs over the packages that
# have goroutines of their own (KMS clients and server, the FUSE file
# system and its worker, the parallel XTS and image pipelines, concurrent
# unlocks), not over the VM tests, which run the code in a guest.
go test -race -count=1 -timeout 15m -skip '^TestVM' \
  ./kmsclient/... ./agent/... ./fuse/... \
  ./blockdev/xts/ ./blockdev/image/ ./blockdev/volume/ ./blockdev/keyring/ ./blockdev/luks2/
