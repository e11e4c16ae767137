package idempotency_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/haita/haita/idempotency"
	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// storeKind is one engine the tests run on.
type storeKind struct {
	name string
	// open returns a fresh, empty store for the test; in a child process
	// (see childEnv) the parent's store.
	open func(t testing.TB) idempotency.Store
}

// sqliteEnv carries a SQLite file's path from a test to its child process.
const sqliteEnv = "HAITA_IDEM_SQLITE"

var storeKinds = []storeKind{
	{name: "postgres", open: func(t testing.TB) idempotency.Store { return sqlStore(t, "pgx", testserver.Postgres(t)) }},
	{name: "mariadb", open: func(t testing.TB) idempotency.Store { return sqlStore(t, "mysql", testserver.MariaDB(t)) }},
	{name: "sqlite", open: func(t testing.TB) idempotency.Store {
		path := os.Getenv(sqliteEnv)
		if path == "" {
			path = filepath.Join(t.TempDir(), "idem.db")
			t.Setenv(sqliteEnv, path)
		}
		return sqlStore(t, "sqlite", "file:"+path+"?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)")
	}},
	{name: "redis", open: func(t testing.TB) idempotency.Store {
		srv := testserver.Redis(t, testserver.RedisOptions{})
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
		t.Cleanup(func() { rdb.Close() })
		s, err := idempotency.NewRedisStore(rdb, idempotency.RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

func sqlStore(t testing.TB, driver, dsn string) *idempotency.SQLStore {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	s, err := idempotency.NewSQLStore(db, idempotency.SQLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// forEachStore runs fn as a subtest per engine.
func forEachStore(t *testing.T, fn func(t *testing.T, k storeKind)) {
	t.Helper()
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { fn(t, k) })
	}
}
