package checkout

import (
	"context"
	"database/sql"
	"time"
)

// Store keeps checkouts for a [Manager]. Each method must decide atomically
// with respect to every other call on the same store, from any process
// sharing it, and must be safe for concurrent use. Implementations: the
// durable [SQLStore] and [LockStore] over any lock backend. Users call the
// Manager, not the Store; the Manager validates arguments and fills the
// Request.
type Store interface {
	// Acquire takes req.Resource for req.Owner with the new req.Token at
	// req.Now, unless a checkout live at req.Now exists: of req.Owner it is
	// renewed and returned (keeping its Token); of another owner a
	// *HeldError is returned. An expired checkout is replaced and, where
	// the store keeps them, recorded as expired.
	Acquire(ctx context.Context, req Request) (Checkout, error)
	// Heartbeat renews the live checkout req.Token holds on req.Resource,
	// or returns ErrExpired, a *BrokenError or ErrNotHeld.
	Heartbeat(ctx context.Context, req Request) (Checkout, error)
	// Release ends the checkout req.Token holds (live or expired but not
	// yet replaced), or returns a *BrokenError, ErrExpired or ErrNotHeld.
	Release(ctx context.Context, req Request) error
	// ReleaseOwner ends every checkout of req.Owner live at req.Now and
	// returns how many.
	ReleaseOwner(ctx context.Context, req Request) (int, error)
	// Break ends the live checkout of req.Resource and records req.By,
	// req.Now and req.Reason for its holder; ErrNotHeld when none is live.
	Break(ctx context.Context, req Request) (Checkout, error)
	// Get returns the checkout of req.Resource live at req.Now.
	Get(ctx context.Context, req Request) (Checkout, bool, error)
	// Sweep removes checkouts expired at req.Now and records older than
	// req.Now minus req.Retention.
	Sweep(ctx context.Context, req Request) (int, error)
}

// TxStore is a [Store] that can verify a checkout inside a database
// transaction, which [Manager.Save] needs.
type TxStore interface {
	Store
	// Save locks the checkout of req.Resource in a transaction, verifies
	// that req.Token holds it live at req.Now (else ErrExpired, a
	// *BrokenError or ErrNotHeld, and fn does not run), renews it as a
	// heartbeat and runs fn in the same transaction.
	Save(ctx context.Context, req Request, fn func(ctx context.Context, tx *sql.Tx) error) error
}

// Request is one call from a [Manager] to its [Store]. Fields a method does
// not use are zero.
type Request struct {
	Resource  string
	Owner     string // Acquire, ReleaseOwner
	Token     string // the new token (Acquire) or the holder's (Heartbeat, Release, Save)
	Now       time.Time
	Idle      time.Duration
	MaxAge    time.Duration
	By        string        // Break
	Reason    string        // Break
	Retention time.Duration // Sweep
}
