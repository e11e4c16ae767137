package sqlcc_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/haita/haita/sqlcc"
)

// TestVersioned checks the holes of other ORMs: zero versions are checked,
// zero rows is never success, deletes are checked.
func TestVersioned(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.exec(t, "CREATE TABLE docs (id BIGINT PRIMARY KEY, body VARCHAR(100) NOT NULL, version BIGINT NOT NULL)")
		e.exec(t, "INSERT INTO docs (id, body, version) VALUES (1, 'a', 0)")
		// Dialect left zero: detected from the *sql.DB; pgx is PostgreSQL.
		tbl := sqlcc.Table{Name: "docs"}
		if d, err := sqlcc.DetectDialect(e.db); err != nil || d != e.dialect {
			t.Fatalf("DetectDialect = %v, %v", d, err)
		}
		if e.pgx {
			if _, err := e.api().UpdateVersioned(ctx, sqlcc.Table{Dialect: sqlcc.MySQL, Name: "docs"}, 1, 0); !errors.Is(err, sqlcc.ErrInvalidOptions) {
				t.Errorf("pgx with dialect MySQL = %v, want ErrInvalidOptions", err)
			}
		}
		v, err := e.api().UpdateVersioned(ctx, tbl, 1, 0, sqlcc.Set("body", "b"))
		if err != nil || v != 1 {
			t.Fatalf("update at version 0 = %d, %v", v, err)
		}
		_, err = e.api().UpdateVersioned(ctx, tbl, 1, 0, sqlcc.Set("body", "c"))
		var ce *sqlcc.ConflictError
		if !errors.Is(err, sqlcc.ErrConflict) || !errors.As(err, &ce) || ce.Current != 1 || ce.Gone || ce.Expected != 0 {
			t.Fatalf("stale update at version 0 = %v (%+v)", err, ce)
		}
		if _, err := e.api().UpdateVersioned(ctx, tbl, 99, 0, sqlcc.Set("body", "x")); !errors.As(err, &ce) || !ce.Gone {
			t.Errorf("update of missing row = %v", err)
		}
		if v, err := e.api().UpdateVersioned(ctx, tbl, 1, 1); err != nil || v != 2 {
			t.Errorf("touch = %d, %v", v, err)
		}
		if err := e.api().DeleteVersioned(ctx, tbl, 1, 1); !errors.As(err, &ce) || ce.Current != 2 {
			t.Errorf("stale delete = %v", err)
		}
		if err := e.api().DeleteVersioned(ctx, tbl, 1, 2); err != nil {
			t.Errorf("delete = %v", err)
		}
		if err := e.api().DeleteVersioned(ctx, tbl, 1, 2); !errors.As(err, &ce) || !ce.Gone {
			t.Errorf("second delete = %v", err)
		}
		if n := e.queryInt(t, "SELECT COUNT(*) FROM docs"); n != 0 {
			t.Errorf("%d rows left", n)
		}
		tx := e.begin(t, 0)
		if _, err := tx.UpdateVersioned(ctx, tbl, 1, 0); e.pgx && !errors.Is(err, sqlcc.ErrConflict) {
			t.Errorf("pgx.Tx without dialect = %v, want ErrConflict (the row is gone)", err)
		} else if !e.pgx && !errors.Is(err, sqlcc.ErrUnknownDialect) {
			t.Errorf("*sql.Tx without dialect = %v, want ErrUnknownDialect", err)
		}
		if _, err := e.api().UpdateVersioned(ctx, sqlcc.Table{Name: "docs; DROP TABLE docs"}, 1, 0); !errors.Is(err, sqlcc.ErrInvalidIdentifier) {
			t.Errorf("bad table name = %v", err)
		}
		if _, err := e.api().UpdateVersioned(ctx, tbl, 1, 0, sqlcc.Set(`body" = 1 --`, 1)); !errors.Is(err, sqlcc.ErrInvalidIdentifier) {
			t.Errorf("bad column name = %v", err)
		}
	})
}

func TestAdd(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.exec(t, "CREATE TABLE stock (id BIGINT PRIMARY KEY, qty BIGINT NOT NULL)")
		e.exec(t, "INSERT INTO stock (id, qty) VALUES (1, 3)")
		tbl := e.table("stock")
		if v, err := e.api().Add(ctx, tbl, 1, "qty", -2, 0); err != nil || v != 1 {
			t.Errorf("Add(-2) = %d, %v", v, err)
		}
		if _, err := e.api().Add(ctx, tbl, 1, "qty", -2, 0); !errors.Is(err, sqlcc.ErrOutOfRange) {
			t.Errorf("Add below 0 = %v", err)
		}
		want := int64(-4)
		if v, err := e.api().Add(ctx, tbl, 1, "qty", -5, math.MinInt64); e.dialect == sqlcc.MySQL {
			// LAST_INSERT_ID is unsigned: a negative result fails, unchanged.
			want = 1
			if err == nil {
				t.Errorf("unbounded Add(-5) on MySQL = %d, want out-of-range error", v)
			}
		} else if err != nil || v != -4 {
			t.Errorf("unbounded Add(-5) = %d, %v; want -4", v, err)
		}
		if _, err := e.api().Add(ctx, tbl, 2, "qty", 1, 0); !errors.Is(err, sqlcc.ErrNotFound) {
			t.Errorf("Add on missing row = %v", err)
		}
		if _, err := e.api().Add(ctx, tbl, 1, "qty", 0, 0); !errors.Is(err, sqlcc.ErrInvalidOptions) {
			t.Errorf("Add(0) = %v", err)
		}
		if n := e.queryInt(t, "SELECT qty FROM stock WHERE id = 1"); n != want {
			t.Errorf("qty = %d, want %d", n, want)
		}
	})
}

func TestFencedUpdate(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.exec(t, "CREATE TABLE jobs (id BIGINT PRIMARY KEY, owner VARCHAR(20), fence BIGINT)")
		e.exec(t, "INSERT INTO jobs (id) VALUES (1)")
		tbl := e.table("jobs")
		if err := e.api().FencedUpdate(ctx, tbl, 1, 5, sqlcc.Set("owner", "a")); err != nil {
			t.Fatalf("token 5 on empty fence: %v", err)
		}
		if err := e.api().FencedUpdate(ctx, tbl, 1, 5, sqlcc.Set("owner", "a")); err != nil {
			t.Errorf("token 5 again (same holder, same values): %v", err)
		}
		if err := e.api().FencedUpdate(ctx, tbl, 1, 7, sqlcc.Set("owner", "b")); err != nil {
			t.Errorf("token 7: %v", err)
		}
		// The paused holder of token 5 wakes up and writes.
		err := e.api().FencedUpdate(ctx, tbl, 1, 5, sqlcc.Set("owner", "a"))
		var se *sqlcc.StaleTokenError
		if !errors.Is(err, sqlcc.ErrStaleToken) || !errors.As(err, &se) || se.Current != 7 || se.Token != 5 {
			t.Errorf("stale token 5 = %v", err)
		}
		var owner string
		if err := e.db.QueryRowContext(ctx, "SELECT owner FROM jobs WHERE id = 1").Scan(&owner); err != nil || owner != "b" {
			t.Errorf("owner = %q, %v; want b", owner, err)
		}
		if err := e.api().FencedUpdate(ctx, tbl, 2, 9); !errors.Is(err, sqlcc.ErrNotFound) {
			t.Errorf("missing row = %v", err)
		}
		if err := e.api().FencedUpdate(ctx, tbl, 1, math.MaxUint64); !errors.Is(err, sqlcc.ErrInvalidOptions) {
			t.Errorf("huge token = %v", err)
		}
	})
}

// TestCreateOrGetOtherKey: a violation of a unique key other than Unique
// must come back as an error, not as somebody else's row.
func TestCreateOrGetOtherKey(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.exec(t, "CREATE TABLE users (id AUTOINC, login VARCHAR(20) NOT NULL UNIQUE, email VARCHAR(40) NOT NULL UNIQUE)")
		tbl := e.table("users")
		var id1, id2 int64
		row := func(login, email string) sqlcc.Row {
			return sqlcc.Row{Table: tbl, Unique: []string{"login"}, Values: []sqlcc.Assignment{sqlcc.Set("login", login), sqlcc.Set("email", email)}}
		}
		if created, err := e.api().CreateOrGet(ctx, row("ann", "ann@x"), &id1); err != nil || !created {
			t.Fatalf("first = %v, %v", created, err)
		}
		if created, err := e.api().CreateOrGet(ctx, row("ann", "other@x"), &id2); err != nil || created || id2 != id1 {
			t.Errorf("second = %v, %v, id %d want %d", created, err, id2, id1)
		}
		if _, err := e.api().CreateOrGet(ctx, row("bob", "ann@x"), &id2); !sqlcc.IsUniqueViolation(err) {
			t.Errorf("other key = %v, want unique violation", err)
		}
		if _, err := e.api().CreateOrGet(ctx, sqlcc.Row{Table: tbl, Unique: []string{"nope"}, Values: []sqlcc.Assignment{sqlcc.Set("login", "x")}}, &id2); !errors.Is(err, sqlcc.ErrInvalidOptions) {
			t.Errorf("unique column without value = %v", err)
		}
	})
}

func TestRetry(t *testing.T) {
	ctx := t.Context()
	conflict := &sqlcc.ConflictError{Table: "t", Key: 1}
	calls := 0
	err := sqlcc.Retry(ctx, sqlcc.RetryOptions{Attempts: 4, BaseDelay: time.Microsecond, MaxDelay: time.Millisecond}, func(context.Context) error {
		calls++
		return conflict
	})
	if calls != 4 || !errors.Is(err, sqlcc.ErrConflict) {
		t.Errorf("always conflicting: %d calls, %v", calls, err)
	}
	calls = 0
	other := errors.New("other")
	if err := sqlcc.Retry(ctx, sqlcc.RetryOptions{}, func(context.Context) error { calls++; return other }); err != other || calls != 1 {
		t.Errorf("other error: %d calls, %v", calls, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = sqlcc.Retry(cctx, sqlcc.RetryOptions{BaseDelay: time.Second, MaxDelay: time.Second}, func(context.Context) error { return conflict })
	if !errors.Is(err, context.Canceled) || !errors.Is(err, sqlcc.ErrConflict) {
		t.Errorf("cancelled: %v", err)
	}
	for _, o := range []sqlcc.RetryOptions{{Attempts: -1}, {BaseDelay: -1}, {BaseDelay: time.Second, MaxDelay: time.Millisecond}} {
		if err := sqlcc.Retry(ctx, o, func(context.Context) error { t.Error("called"); return nil }); !errors.Is(err, sqlcc.ErrInvalidOptions) {
			t.Errorf("Retry(%+v) = %v", o, err)
		}
	}
	if err := sqlcc.RunTx(ctx, nil, sqlcc.TxOptions{Attempts: -1}, nil); !errors.Is(err, sqlcc.ErrInvalidOptions) {
		t.Errorf("RunTx(Attempts -1) = %v", err)
	}
}

func TestQuoteIdentifier(t *testing.T) {
	for _, tc := range []struct {
		d          sqlcc.Dialect
		name, want string
	}{
		{sqlcc.Postgres, "orders", `"orders"`},
		{sqlcc.SQLite, "_x1", `"_x1"`},
		{sqlcc.MySQL, "Orders", "`Orders`"},
		{sqlcc.MySQL, strings.Repeat("a", 63), "`" + strings.Repeat("a", 63) + "`"},
	} {
		if got, err := sqlcc.QuoteIdentifier(tc.d, tc.name); err != nil || got != tc.want {
			t.Errorf("QuoteIdentifier(%v, %q) = %q, %v", tc.d, tc.name, got, err)
		}
	}
	for _, bad := range []string{"", "1a", "a-b", "a b", `a"b`, "a`b", "ä", strings.Repeat("a", 64), "a;", "a\x00"} {
		if _, err := sqlcc.QuoteIdentifier(sqlcc.Postgres, bad); !errors.Is(err, sqlcc.ErrInvalidIdentifier) {
			t.Errorf("QuoteIdentifier(%q) = %v", bad, err)
		}
	}
}

// FuzzIdentifier: whatever the name, it is either rejected or quoted into a
// single identifier with nothing that could end the quote.
func FuzzIdentifier(f *testing.F) {
	for _, s := range []string{"id", "a b", `x"; DROP TABLE t; --`, "`", "Ünïcode", strings.Repeat("z", 70), "_"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, d := range []sqlcc.Dialect{sqlcc.Postgres, sqlcc.MySQL, sqlcc.SQLite} {
			q, err := sqlcc.QuoteIdentifier(d, name)
			if !sqlcc.ValidIdentifier(name) {
				if !errors.Is(err, sqlcc.ErrInvalidIdentifier) {
					t.Fatalf("%v: invalid %q accepted: %q, %v", d, name, q, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%v: valid %q rejected: %v", d, name, err)
			}
			if len(name) == 0 || len(name) > 63 {
				t.Fatalf("length %d accepted", len(name))
			}
			inner := q[1 : len(q)-1]
			if inner != name || strings.ContainsAny(inner, "\"`'; \\\x00-") {
				t.Fatalf("%v: %q quoted as %q", d, name, q)
			}
		}
	})
}
