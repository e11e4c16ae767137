#!/usr/bin/env bash
# The test command: installs the engines the tests start (Debian packages),
# then vets and tests every module in the repository with the race detector.
# Tests start their own servers on loopback, so results are never taken from
# the test cache (-count=1): the servers are outside what it sees.
# HAITA_REQUIRE_SERVERS=1 makes a missing server a failure, not a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server redis-tools)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v etcd >/dev/null || need+=(etcd-server etcd-client)
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v chromium >/dev/null || need+=(chromium)
if ((${#need[@]})); then
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	echo "test.sh: installing ${need[*]}"
	"${sudo[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${need[@]}"
fi

export HAITA_REQUIRE_SERVERS=1
start=$(date +%s)
for mod in . bench; do
	echo "test.sh: module ${mod}"
	(cd "$mod" && go mod download && go vet ./... && go test -race -count=1 -timeout 25m ./...)
done
# Every parser is fuzzed for a bounded number of executions; a crash fails the
# run and leaves its input in the package's testdata/fuzz. A count, not a
# duration: with a duration, Go 1.26's fuzz coordinator can report its own
# end-of-time deadline as a failure on a loaded machine (golang/go#75804).
fuzz=(
	"FuzzValidateKey ./lock"
	"FuzzFileName ./lock/filelock"
	"FuzzParseETags ./httpcc"
	"FuzzParseVersion ./httpcc"
	"FuzzCheck ./httpcc"
	"FuzzIdentifier ./sqlcc"
	"FuzzParseKey ./idempotency"
	"FuzzAPIBodies ./internal/faults"
)
for f in "${fuzz[@]}"; do
	read -r name pkg <<<"$f"
	echo "test.sh: fuzz ${name} ${pkg}"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "${HAITA_FUZZTIME:-20000x}" "$pkg"
done
echo "test.sh: all tests passed in $(($(date +%s) - start))s"
