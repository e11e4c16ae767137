// Package memlock provides in-process keyed locks: leases on string keys
// with fencing tokens, an optional TTL,
// and waiters queued in arrival order and woken by channels (see
// [Locker.Acquire] for how a hot key is shared). It excludes goroutines of
// one process only; use lock/filelock on one machine or a network backend
// across machines.
//
// Nothing is kept per key once a key is released and nobody waits for it,
// so keys may be unbounded (user ids, order numbers). [Map] adds atomic
// read-modify-write on keyed values, the cure for the compound
// check-then-put race on a concurrent map.
package memlock
