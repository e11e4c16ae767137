package idempotency

import (
	"context"
	"time"
)

// Store keeps claims and outcomes. [SQLStore] and [RedisStore] implement it;
// an implementation must make each method one atomic step on the engine and
// judge lease expiry by one clock (the engine's), because the Runner's
// guarantees rest on these rules:
//
//   - Claim creates the key's record in flight with token 1 if it does not
//     exist. If it exists in flight with the same fingerprint and its lease
//     has expired, or it is done and its retention has passed, Claim takes it
//     over: the token grows by one and the owner, fingerprint and lease are
//     replaced. Otherwise it changes nothing and reports the record.
//   - Extend, Complete and Release change the record only if it is in
//     flight with exactly the given owner and token; otherwise they return
//     [ErrLeaseLost] and change nothing.
//
// Methods are called concurrently, from many processes.
type Store interface {
	// Claim claims req.Key for req.Owner or reports who has it.
	Claim(ctx context.Context, req ClaimRequest) (Record, error)
	// Extend renews the lease to lease from now.
	Extend(ctx context.Context, key, owner string, token uint64, lease time.Duration) error
	// Complete stores value as the key's outcome, kept for retention from
	// now.
	Complete(ctx context.Context, key, owner string, token uint64, value []byte, retention time.Duration) error
	// Release ends the claim at once without an outcome, so that the next
	// Claim takes the key over.
	Release(ctx context.Context, key, owner string, token uint64) error
}

// ClaimRequest is the argument of [Store.Claim].
type ClaimRequest struct {
	Key         string
	Fingerprint string
	// Owner is the claimant's random value (128 bits, hex).
	Owner string
	// Lease is the claim's time to live.
	Lease time.Duration
	// Retention is how long an abandoned claim's record is kept after its
	// lease ended; stores that purge use it.
	Retention time.Duration
}

// State is the state of a key's record as [Store.Claim] reports it.
type State int

// The states a Claim reports.
const (
	// Claimed: the caller now holds the claim with Record.Token.
	Claimed State = iota + 1
	// InFlight: another execution holds an unexpired claim, or the record's
	// fingerprint differs from the caller's.
	InFlight
	// Done: the outcome is stored in Record.Value.
	Done
)

// Record is what [Store.Claim] reports.
type Record struct {
	State State
	// Fingerprint is the record's fingerprint (InFlight and Done).
	Fingerprint string
	// Token is the caller's token (Claimed), the holder's (InFlight) or the
	// token of the execution that stored the outcome (Done).
	Token uint64
	// Value is the stored outcome (Done).
	Value []byte
	// RetryAfter is how long the holder's lease has left (InFlight), if the
	// store knows it.
	RetryAfter time.Duration
}
