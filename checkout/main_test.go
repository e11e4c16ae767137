package checkout_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/sqlcc"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// clock is a fake clock the tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type engine struct {
	name, driver string
	dsn          func(t testing.TB) string
}

var engines = []engine{
	{"sqlite", "sqlite", func(t testing.TB) string {
		return "file:" + filepath.Join(t.TempDir(), "c.db") + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate"
	}},
	{"postgres", "pgx", func(t testing.TB) string { return testserver.Postgres(t) }},
	{"mariadb", "mysql", func(t testing.TB) string { return testserver.MariaDB(t) }},
}

// env is one engine's database with a clock; managers opened from it share
// the database like separate processes would.
type env struct {
	t     *testing.T
	name  string
	dsn   string
	drv   string
	clock *clock
	opts  checkout.Options
	db    *sql.DB // the first pool
}

func (e *env) open() *sql.DB {
	db, err := sql.Open(e.drv, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	db.SetMaxOpenConns(32)
	e.t.Cleanup(func() { db.Close() })
	return db
}

// manager returns a Manager on a new pool: a stand-in for another process.
func (e *env) manager() *checkout.Manager {
	s, err := checkout.NewSQLStore(e.open(), checkout.SQLOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := checkout.New(s, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

const (
	idle   = 10 * time.Minute
	maxAge = time.Hour
)

func forEachEngine(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, eng := range engines {
		t.Run(eng.name, func(t *testing.T) {
			e := &env{t: t, name: eng.name, dsn: eng.dsn(t), drv: eng.driver, clock: newClock()}
			e.opts = checkout.Options{Idle: idle, MaxAge: maxAge, Now: e.clock.Now}
			e.db = e.open()
			s, err := checkout.NewSQLStore(e.db, checkout.SQLOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CreateTable(t.Context()); err != nil {
				t.Fatal(err)
			}
			// Idempotent.
			if err := s.CreateTable(t.Context()); err != nil {
				t.Fatal(err)
			}
			fn(t, e)
		})
	}
}

// exec runs a statement with ? placeholders on e's database.
func (e *env) exec(ctx context.Context, db sqlcc.DB, q string, args ...any) (sql.Result, error) {
	return db.ExecContext(ctx, e.q(q), args...)
}

func (e *env) q(q string) string {
	if e.name != "postgres" {
		return q
	}
	out := make([]byte, 0, len(q)+8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = append(out, '$', byte('0'+n))
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}
