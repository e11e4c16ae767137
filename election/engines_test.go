package election_test

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/lock/mysqllock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// newLocker returns a Locker on the engine under test that publishes
// holder; the test closes it.
type newLocker func(t testing.TB, holder string) lock.Locker

// engine is one lock backend the election tests run on.
type engine struct {
	name string
	// ttl is the leases' TTL (with auto-refresh); zero for backends
	// without one.
	ttl time.Duration
	// procs: candidates in other processes exclude each other.
	procs bool
	// start starts the engine's servers for t (a child process gets its
	// parent's) and returns the Locker constructor.
	start func(t *testing.T) newLocker
}

// envDir names the directory a filelock child shares with its parent.
const envDir = "HAITA_ELECTION_DIR"

var engines = []engine{
	{name: "memlock", ttl: time.Second, start: func(t *testing.T) newLocker {
		var base memlock.Locker
		return func(t testing.TB, holder string) lock.Locker {
			l, err := base.With(opts(time.Second, holder))
			return closing(t, l, err)
		}
	}},
	{name: "filelock", procs: true, start: func(t *testing.T) newLocker {
		dir := os.Getenv(envDir)
		if dir == "" {
			dir = t.TempDir()
			t.Setenv(envDir, dir)
		}
		return func(t testing.TB, holder string) lock.Locker {
			l, err := filelock.New(dir, lock.Options{Holder: holder})
			return closing(t, l, err)
		}
	}},
	{name: "redis", ttl: time.Second, procs: true, start: func(t *testing.T) newLocker {
		srv := testserver.Redis(t, testserver.RedisOptions{})
		return func(t testing.TB, holder string) lock.Locker {
			c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			l, err := redislock.New(c, opts(time.Second, holder))
			return closing(t, l, err)
		}
	}},
	{name: "redlock", ttl: time.Second, procs: true, start: func(t *testing.T) newLocker {
		var addrs []string
		for range 3 {
			addrs = append(addrs, testserver.Redis(t, testserver.RedisOptions{}).Addr())
		}
		return func(t testing.TB, holder string) lock.Locker {
			var cs []redis.Scripter
			for _, a := range addrs {
				c := redis.NewClient(&redis.Options{Addr: a})
				t.Cleanup(func() { _ = c.Close() })
				cs = append(cs, c)
			}
			l, err := redlock.New(cs, opts(time.Second, holder))
			return closing(t, l, err)
		}
	}},
	{name: "pglock", ttl: time.Second, procs: true, start: func(t *testing.T) newLocker {
		dsn := testserver.Postgres(t)
		return func(t testing.TB, holder string) lock.Locker {
			pool, err := pgxpool.New(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			if err := pglock.CreateTable(context.Background(), pool, ""); err != nil {
				t.Fatal(err)
			}
			l, err := pglock.New(pool, opts(time.Second, holder))
			return closing(t, l, err)
		}
	}},
	{name: "mysqllock", ttl: time.Second, procs: true, start: func(t *testing.T) newLocker {
		dsn := testserver.MariaDB(t)
		return func(t testing.TB, holder string) lock.Locker {
			db, err := sql.Open("mysql", dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			if err := mysqllock.CreateTable(context.Background(), db, ""); err != nil {
				t.Fatal(err)
			}
			l, err := mysqllock.New(db, opts(time.Second, holder))
			return closing(t, l, err)
		}
	}},
	{name: "etcdlock", ttl: 2 * time.Second, procs: true, start: func(t *testing.T) newLocker {
		eps := testserver.Etcd(t, 1).Endpoints()
		return func(t testing.TB, holder string) lock.Locker {
			cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
			l, err := etcdlock.New(cli, opts(2*time.Second, holder))
			return closing(t, l, err)
		}
	}},
}

func opts(ttl time.Duration, holder string) lock.Options {
	return lock.Options{TTL: ttl, AutoRefresh: true, Holder: holder}
}

func closing(t testing.TB, l lock.Locker, err error) lock.Locker {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// forEach runs f as a subtest per engine that keep selects.
func forEach(t *testing.T, keep func(engine) bool, f func(t *testing.T, e engine, nl newLocker)) {
	for _, e := range engines {
		if keep != nil && !keep(e) {
			continue
		}
		t.Run(e.name, func(t *testing.T) { f(t, e, e.start(t)) })
	}
}
