// Package faults holds haita's fault suite: tests, and nothing else, that
// run every lock backend under paused, killed and cut-off holders, lost
// responses, engine restarts, Redlock instance failures, expiring waiters
// and refresh/release races, on the real servers internal/testserver starts.
//
// The workload re-executes the test binary as several worker processes that
// acquire a key, read-modify-write a resource guarded by the lease's fencing
// token — a PostgreSQL row written with sqlcc.FencedUpdate and a fenced
// register in a file — and release. Every operation is recorded with its
// start and end times; the parent checks the merged history with porcupine
// (a mutex model for the grants, a fenced-register model for each resource)
// and the plain invariants: the final counter equals the acknowledged
// increments, and no write with an older token was accepted after a newer
// one.
//
// The short variant runs in plain go test. The long variant — more
// processes and iterations, a three-member etcd and five Redlock instances
// in the workload — runs with the build tag faultslong or with
// HAITA_FAULTS_LONG=1:
//
//	HAITA_REQUIRE_SERVERS=1 HAITA_FAULTS_LONG=1 go test -race -count=1 -timeout 30m ./internal/faults/
//
// docs/reliability.md has the table of faults, backends and outcomes.
package faults
