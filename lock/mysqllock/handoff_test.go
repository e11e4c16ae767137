package mysqllock

import (
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
)

// TestHandoff checks the statement a local handoff runs: the key passes
// from its holder to another owner with a greater token and a full TTL,
// never free in between; the old owner no longer holds it; and a handoff
// from an owner that does not hold the key changes nothing.
func TestHandoff(t *testing.T) {
	db, err := sql.Open("mysql", testserver.MariaDB(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := CreateTable(t.Context(), db, ""); err != nil {
		t.Fatal(err)
	}
	l, err := New(db, lock.Options{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	table, err := quoteTable(DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	b := newBackend(db, table)
	defer b.Close()
	ctx := t.Context()

	first := lock.Request{Key: "k", Owner: lock.NewOwner(), Holder: "first", TTL: time.Minute}
	g, err := b.Try(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	second := lock.Request{Key: "k", Owner: lock.NewOwner(), Holder: "second", TTL: 2 * time.Minute}
	tok, err := b.handoff(ctx, first, second)
	if err != nil {
		t.Fatal(err)
	}
	if tok <= g.Token {
		t.Errorf("token after the handoff %d, not greater than %d", tok, g.Token)
	}
	var he *lock.HeldError
	if _, err := l.TryAcquire(ctx, "k"); !errors.As(err, &he) || he.Holder != "second" || time.Until(he.ExpiresAt) < 110*time.Second {
		t.Errorf("after the handoff another owner's TryAcquire = %v, want held by second for about 2 minutes", err)
	}
	if err := b.Release(ctx, first); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("the old owner's Release = %v, want ErrNotHeld", err)
	}
	third := lock.Request{Key: "k", Owner: lock.NewOwner(), Holder: "third", TTL: time.Minute}
	if _, err := b.handoff(ctx, first, third); !errors.Is(err, lock.ErrNotHeld) {
		t.Errorf("handoff from an owner that does not hold the key = %v, want ErrNotHeld", err)
	}
	if err := b.Refresh(ctx, second); err != nil {
		t.Errorf("the new owner's Refresh: %v", err)
	}
	if err := b.Release(ctx, second); err != nil {
		t.Errorf("the new owner's Release: %v", err)
	}
}
