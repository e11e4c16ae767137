package checkout_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/sqlcc"
)

// TestAcquireRace: N users on N pools race for one free resource; exactly
// one wins, the others learn who holds it, since when and until when.
func TestAcquireRace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		const users = 12
		for round := range 4 {
			res := fmt.Sprintf("doc/%d", round)
			ms := make([]*checkout.Manager, users)
			for i := range ms {
				ms[i] = e.manager()
			}
			var (
				wg    sync.WaitGroup
				wins  atomic.Int32
				won   = make([]checkout.Checkout, users)
				held  = make([]*checkout.HeldError, users)
				start = make(chan struct{})
			)
			for i := range users {
				wg.Go(func() {
					<-start
					c, err := ms[i].Acquire(t.Context(), res, fmt.Sprintf("user%d", i))
					var he *checkout.HeldError
					switch {
					case err == nil:
						wins.Add(1)
						won[i] = c
					case errors.As(err, &he):
						held[i] = he
					default:
						t.Errorf("user%d: %v", i, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if wins.Load() != 1 {
				t.Fatalf("round %d: %d winners, want exactly 1", round, wins.Load())
			}
			var winner checkout.Checkout
			for _, c := range won {
				if c.Token != "" {
					winner = c
				}
			}
			now := e.clock.Now()
			if !winner.Since.Equal(now) || !winner.Until.Equal(now.Add(idle)) || len(winner.Token) != 32 {
				t.Fatalf("winner %+v", winner)
			}
			for i, he := range held {
				if won[i].Token != "" {
					continue
				}
				if he.Holder != winner.Owner || !he.Since.Equal(winner.Since) || !he.Until.Equal(winner.Until) || he.Resource != res {
					t.Fatalf("user%d got %+v, winner %+v", i, he, winner)
				}
				if !errors.Is(he, checkout.ErrHeld) {
					t.Fatal("HeldError does not match ErrHeld")
				}
			}
			got, ok, err := ms[0].Get(t.Context(), res)
			if err != nil || !ok || got.Owner != winner.Owner || got.Token != "" {
				t.Fatalf("Get = %+v, %v, %v", got, ok, err)
			}
		}
	})
}

// TestLifecycle covers renewal by the same owner, heartbeats, idle expiry,
// the maximum age, release and release of an owner, on a clock moved by
// hand.
func TestLifecycle(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		m, other := e.manager(), e.manager()
		t0 := e.clock.Now()

		t.Run("same owner renews", func(t *testing.T) {
			a, err := m.Acquire(ctx, "r1", "alice")
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Add(time.Minute)
			b, err := other.Acquire(ctx, "r1", "alice")
			if err != nil {
				t.Fatal(err)
			}
			if b.Token != a.Token || !b.Since.Equal(a.Since) || !b.LastBeat.Equal(e.clock.Now()) || !b.Until.Equal(e.clock.Now().Add(idle)) {
				t.Fatalf("renewed %+v from %+v", b, a)
			}
			if err := m.Release(ctx, "r1", a.Token); err != nil {
				t.Fatal(err)
			}
			if _, ok, _ := m.Get(ctx, "r1"); ok {
				t.Fatal("released checkout still returned")
			}
			if err := m.Release(ctx, "r1", a.Token); !errors.Is(err, checkout.ErrNotHeld) {
				t.Fatalf("second release: %v", err)
			}
		})

		t.Run("idle expiry", func(t *testing.T) {
			a, err := m.Acquire(ctx, "r2", "alice")
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Add(idle - time.Second)
			if _, err := m.Heartbeat(ctx, "r2", a.Token); err != nil {
				t.Fatal(err)
			}
			e.clock.Add(idle - time.Second)
			if _, err := other.Acquire(ctx, "r2", "bob"); !errors.Is(err, checkout.ErrHeld) {
				t.Fatalf("bob before expiry: %v", err)
			}
			e.clock.Add(time.Second)
			// Exactly at Until the checkout has ended.
			if _, ok, _ := m.Get(ctx, "r2"); ok {
				t.Fatal("expired checkout returned by Get")
			}
			if _, err := m.Heartbeat(ctx, "r2", a.Token); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("heartbeat after expiry: %v", err)
			}
			b, err := other.Acquire(ctx, "r2", "bob")
			if err != nil {
				t.Fatalf("bob after expiry: %v", err)
			}
			// Alice learns that it expired even though Bob holds it now.
			if _, err := m.Heartbeat(ctx, "r2", a.Token); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("alice after takeover: %v", err)
			}
			if err := m.Release(ctx, "r2", a.Token); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("alice release after takeover: %v", err)
			}
			if got, ok, _ := m.Get(ctx, "r2"); !ok || got.Owner != "bob" {
				t.Fatalf("Get = %+v", got)
			}
			if err := other.Release(ctx, "r2", b.Token); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("max age", func(t *testing.T) {
			a, err := m.Acquire(ctx, "r3", "alice")
			if err != nil {
				t.Fatal(err)
			}
			since := e.clock.Now()
			for e.clock.Now().Before(since.Add(maxAge - idle/2)) {
				e.clock.Add(idle / 2)
				c, err := m.Heartbeat(ctx, "r3", a.Token)
				if err != nil {
					t.Fatalf("heartbeat at %v: %v", e.clock.Now().Sub(since), err)
				}
				want := e.clock.Now().Add(idle)
				if lim := since.Add(maxAge); lim.Before(want) {
					want = lim
				}
				if !c.Until.Equal(want) {
					t.Fatalf("Until = %v, want %v", c.Until, want)
				}
			}
			e.clock.Add(since.Add(maxAge).Sub(e.clock.Now()))
			if _, err := m.Heartbeat(ctx, "r3", a.Token); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("heartbeat at max age: %v", err)
			}
			if _, err := other.Acquire(ctx, "r3", "bob"); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("release owner", func(t *testing.T) {
			for _, r := range []string{"o1", "o2", "o3"} {
				if _, err := m.Acquire(ctx, r, "carol"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := m.Acquire(ctx, "o4", "dave"); err != nil {
				t.Fatal(err)
			}
			n, err := other.ReleaseOwner(ctx, "carol")
			if err != nil || n != 3 {
				t.Fatalf("ReleaseOwner = %d, %v", n, err)
			}
			for _, r := range []string{"o1", "o2", "o3"} {
				if _, err := other.Acquire(ctx, r, "erin"); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok, _ := m.Get(ctx, "o4"); !ok {
				t.Fatal("dave's checkout released too")
			}
		})

		t.Run("sweep", func(t *testing.T) {
			a, err := m.Acquire(ctx, "s1", "alice")
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Add(maxAge)
			n, err := m.Sweep(ctx)
			if err != nil || n == 0 {
				t.Fatalf("Sweep = %d, %v", n, err)
			}
			if _, err := m.Heartbeat(ctx, "s1", a.Token); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("heartbeat after sweep: %v", err)
			}
			e.clock.Add(checkout.DefaultRetention + time.Second)
			if _, err := m.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Heartbeat(ctx, "s1", a.Token); !errors.Is(err, checkout.ErrNotHeld) {
				t.Fatalf("heartbeat after the record was swept: %v", err)
			}
		})
		_ = t0
	})
}

// TestBreak: an admin breaks Alice's checkout from another process; Alice
// learns who, when and why on her next heartbeat, save and release, also
// after Bob took the resource.
func TestBreak(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		alice, admin, bob := e.manager(), e.manager(), e.manager()
		a, err := alice.Acquire(ctx, "doc", "alice")
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Minute)
		at := e.clock.Now()
		broken, err := admin.Break(ctx, "doc", "root", "alice is on holiday")
		if err != nil {
			t.Fatal(err)
		}
		if broken.Owner != "alice" || broken.Token != "" {
			t.Fatalf("Break returned %+v", broken)
		}
		if _, err := admin.Break(ctx, "doc", "root", "again"); !errors.Is(err, checkout.ErrNotHeld) {
			t.Fatalf("second break: %v", err)
		}
		if _, err := bob.Acquire(ctx, "doc", "bob"); err != nil {
			t.Fatal(err)
		}
		check := func(what string, err error) {
			t.Helper()
			var be *checkout.BrokenError
			if !errors.As(err, &be) || !errors.Is(err, checkout.ErrBroken) {
				t.Fatalf("%s: %v, want BrokenError", what, err)
			}
			if be.By != "root" || be.Reason != "alice is on holiday" || !be.At.Equal(at) || be.Owner != "alice" || be.Resource != "doc" {
				t.Fatalf("%s: %+v", what, be)
			}
		}
		_, err = alice.Heartbeat(ctx, "doc", a.Token)
		check("heartbeat", err)
		check("save", alice.Save(ctx, "doc", a.Token, func(context.Context, *sql.Tx) error {
			t.Fatal("save ran after break")
			return nil
		}))
		check("release", alice.Release(ctx, "doc", a.Token))
		if got, ok, _ := alice.Get(ctx, "doc"); !ok || got.Owner != "bob" {
			t.Fatalf("Get = %+v, %v", got, ok)
		}
	})
}

// TestSave: saves under a live checkout are applied exactly once each;
// saves after expiry, break or with a wrong token never are; and while an
// admin breaks the checkout concurrently, exactly the saves reported
// successful are in the table.
func TestSave(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		if _, err := e.exec(ctx, e.db, "CREATE TABLE docs (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.exec(ctx, e.db, "INSERT INTO docs (id, n) VALUES (1, 0)"); err != nil {
			t.Fatal(err)
		}
		count := func() int {
			var n int
			if err := e.db.QueryRowContext(ctx, "SELECT n FROM docs WHERE id = 1").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		inc := func(ctx context.Context, tx *sql.Tx) error {
			_, err := e.exec(ctx, tx, "UPDATE docs SET n = n + 1 WHERE id = 1")
			return err
		}
		m := e.manager()
		a, err := m.Acquire(ctx, "doc", "alice")
		if err != nil {
			t.Fatal(err)
		}

		t.Run("applied once each", func(t *testing.T) {
			var wg sync.WaitGroup
			for range 20 {
				wg.Go(func() {
					if err := m.Save(ctx, "doc", a.Token, inc); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if n := count(); n != 20 {
				t.Fatalf("n = %d after 20 saves", n)
			}
		})

		t.Run("refused", func(t *testing.T) {
			if err := m.Save(ctx, "doc", "0123456789abcdef0123456789abcdef", inc); !errors.Is(err, checkout.ErrNotHeld) {
				t.Fatalf("wrong token: %v", err)
			}
			// fn's error rolls back and is returned.
			boom := errors.New("boom")
			if err := m.Save(ctx, "doc", a.Token, func(ctx context.Context, tx *sql.Tx) error {
				if err := inc(ctx, tx); err != nil {
					return err
				}
				return boom
			}); !errors.Is(err, boom) {
				t.Fatalf("failing fn: %v", err)
			}
			e.clock.Add(idle)
			if err := m.Save(ctx, "doc", a.Token, inc); !errors.Is(err, checkout.ErrExpired) {
				t.Fatalf("after expiry: %v", err)
			}
			if n := count(); n != 20 {
				t.Fatalf("n = %d, refused saves were applied", n)
			}
		})

		t.Run("racing a break", func(t *testing.T) {
			before := count()
			for round := range 5 {
				res := fmt.Sprintf("race/%d", round)
				c, err := m.Acquire(ctx, res, "alice")
				if err != nil {
					t.Fatal(err)
				}
				admin := e.manager()
				var ok atomic.Int32
				var wg sync.WaitGroup
				afterBreak := -1
				slowInc := func(ctx context.Context, tx *sql.Tx) error {
					if err := inc(ctx, tx); err != nil {
						return err
					}
					time.Sleep(2 * time.Millisecond) // widen the window between verify and commit
					return nil
				}
				for i := range 10 {
					wg.Go(func() {
						if i == 5 {
							time.Sleep(3 * time.Millisecond)
							if _, err := admin.Break(ctx, res, "root", "race"); err != nil {
								t.Error(err)
							}
							afterBreak = count()
							return
						}
						err := m.Save(ctx, res, c.Token, slowInc)
						switch {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, checkout.ErrBroken):
						default:
							t.Error(err)
						}
					})
				}
				wg.Wait()
				if got := count() - before; got != int(ok.Load()) {
					t.Fatalf("round %d: %d saves reported applied, %d in the table", round, ok.Load(), got)
				}
				// A save either committed before the break or was refused:
				// nothing changes once Break has returned.
				if n := count(); n != afterBreak {
					t.Fatalf("round %d: %d saves applied after Break returned", round, n-afterBreak)
				}
				before = count()
			}
		})
	})
}

func TestOptions(t *testing.T) {
	s, err := checkout.NewLockStore(nil, checkout.LockStoreOptions{})
	if !errors.Is(err, checkout.ErrInvalid) || s != nil {
		t.Fatalf("nil locker: %v", err)
	}
	if _, err := checkout.New(nil, checkout.Options{}); !errors.Is(err, checkout.ErrInvalid) {
		t.Fatalf("nil store: %v", err)
	}
	if _, err := checkout.NewSQLStore(nil, checkout.SQLOptions{}); !errors.Is(err, checkout.ErrInvalid) {
		t.Fatalf("nil db: %v", err)
	}
	db, err := sql.Open("sqlite", "file::memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := checkout.NewSQLStore(db, checkout.SQLOptions{Table: "bad name"}); !errors.Is(err, checkout.ErrInvalid) {
		t.Fatalf("bad table: %v", err)
	}
	// The longest name leaves room for the longest name made from it, Table+"_ended_at".
	long := strings.Repeat("t", 55)
	if _, err := checkout.NewSQLStore(db, checkout.SQLOptions{Table: long}); !errors.Is(err, checkout.ErrInvalid) {
		t.Fatalf("%d-byte table: %v", len(long), err)
	}
	if _, err := checkout.Schema(sqlcc.SQLite, long); !errors.Is(err, checkout.ErrInvalid) {
		t.Fatalf("Schema, %d-byte table: %v", len(long), err)
	}
	if st, err := checkout.NewSQLStore(db, checkout.SQLOptions{Table: long[:54]}); err != nil {
		t.Fatalf("54-byte table: %v", err)
	} else if err := st.CreateTable(t.Context()); err != nil {
		t.Fatalf("54-byte table: %v", err)
	}
	st, err := checkout.NewSQLStore(db, checkout.SQLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []checkout.Options{{Idle: -1}, {MaxAge: -1}, {Retention: -1}} {
		if _, err := checkout.New(st, o); !errors.Is(err, checkout.ErrInvalid) {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	m, err := checkout.New(st, checkout.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][2]string{{"", "a"}, {"r", ""}, {string(make([]byte, 513)), "a"}, {"r", "\xff"}} {
		if _, err := m.Acquire(t.Context(), args[0], args[1]); !errors.Is(err, checkout.ErrInvalid) {
			t.Fatalf("Acquire(%q, %q): %v", args[0], args[1], err)
		}
	}
}
