package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/pglock"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// startPG initialises and starts a PostgreSQL 15 server for one benchmark
// function, with the package defaults (fsync and synchronous_commit on),
// and returns a pool on it; tb's cleanup stops the server and removes its
// directory.
func startPG(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		tb.Skip("PostgreSQL 15 is not installed (Debian package postgresql-15)")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Skip("no postgres user: ", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "haita-bench-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		tb.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	run := func(name string, args ...string) error {
		cmd := exec.Command(filepath.Join(pgBin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", name, err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		tb.Fatal(err)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100", port, dir)
	if err := run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "pg.log"), "-o", opts, "-w", "start"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = run("pg_ctl", "-D", data, "-m", "immediate", "stop") })
	pool, err := pgxpool.New(context.Background(), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&pool_max_conns=16", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := pglock.CreateTable(context.Background(), pool, ""); err != nil {
		tb.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), pgRawSchema); err != nil {
		tb.Fatal(err)
	}
	return pool
}

// The raw lease row: the statements a hand-written lock would use, on a
// logged table like pglock's (same durability), without token, holder,
// the take-over CTE or notification.
const (
	pgRawSchema = `CREATE TABLE raw_locks (key text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL);
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counters VALUES (1, 0);`
	pgRawAcquire = `INSERT INTO raw_locks AS l (key, owner, expires_at) VALUES ($1, $2, now() + interval '30 seconds')
ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE l.expires_at <= now()`
	pgRawRelease = `DELETE FROM raw_locks WHERE key = $1 AND owner = $2`
)

func pgPeers(tb testing.TB, pool *pgxpool.Pool) (names []string, m map[string]mutex) {
	l, err := pglock.New(pool, lock.Options{TTL: benchTTL})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	m = map[string]mutex{
		"haita": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			le, err := l.Acquire(ctx, key)
			if err != nil {
				return nil, err
			}
			return le.Release, nil
		}),
		// Session advisory lock on a connection held for the whole hold:
		// the server queues waiters; nothing is written.
		"raw-advisory": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			h := fnv.New64a()
			h.Write([]byte(key))
			id := int64(h.Sum64())
			c, err := pool.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", id); err != nil {
				c.Release()
				return nil, err
			}
			return func(ctx context.Context) error {
				defer c.Release()
				_, err := c.Exec(ctx, "SELECT pg_advisory_unlock($1)", id)
				return err
			}, nil
		}),
		// The raw lease-row pair; a waiter polls every millisecond.
		"raw-lease-row": rawLeaseRow(func(ctx context.Context, key, owner string) (bool, error) {
			tag, err := pool.Exec(ctx, pgRawAcquire, key, owner)
			return err == nil && tag.RowsAffected() == 1, err
		}, func(ctx context.Context, key, owner string) (bool, error) {
			tag, err := pool.Exec(ctx, pgRawRelease, key, owner)
			return err == nil && tag.RowsAffected() == 1, err
		}),
	}
	return []string{"raw-advisory", "raw-lease-row", "haita"}, m
}

// BenchmarkPGUncontended: one goroutine acquires and releases one key that
// nobody else wants, again and again. "raw-update" is one durable
// single-row UPDATE per op, for calibration: a lease-row lock costs two
// such commits.
func BenchmarkPGUncontended(b *testing.B) {
	pool := startPG(b)
	names, m := pgPeers(b, pool)
	benchRawUpdate(b, func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "UPDATE counters SET n = n + 1 WHERE id = 1")
		return err
	})
	benchUncontended(b, names, m, "pgu:")
}

// BenchmarkPGHotKey: 8 goroutines on one key, each taking it again as soon
// as it let go. haita's goroutines share one Locker (one LISTEN
// connection); they queue in the wait table, and each release hands the key
// to the next of them in one statement.
func BenchmarkPGHotKey(b *testing.B) {
	pool := startPG(b)
	names, m := pgPeers(b, pool)
	const workers = 8
	benchHotKey(b, names, m, "pgh:", workers)
}
