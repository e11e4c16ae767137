package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/mysqllock"
)

// startMaria initialises and starts a MariaDB server for one benchmark
// function, with the server's durability defaults (the InnoDB log flushed
// at every commit), and returns a pool of up to 16 connections on it; tb's
// cleanup stops the server and removes its directory.
func startMaria(tb testing.TB) *sql.DB {
	tb.Helper()
	server, err := exec.LookPath("mariadbd")
	if err != nil {
		server = "/usr/sbin/mariadbd"
	}
	if _, err := os.Stat(server); err != nil {
		tb.Skip("MariaDB is not installed (Debian package mariadb-server)")
	}
	dir, err := os.MkdirTemp("", "haita-bench-maria-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	install := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		tb.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(server, "--no-defaults", "--user=root", "--datadir="+data,
		"--socket="+filepath.Join(dir, "sock"), "--port="+strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin", "--max-connections=200")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log, err := os.Create(filepath.Join(dir, "mariadbd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = log.Close()
	})
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/mysql", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); db.PingContext(ctx) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("MariaDB did not start within 60s")
		}
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE bench"); err != nil {
		tb.Fatal(err)
	}
	_ = db.Close()
	db, err = sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/bench", port))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	if err := mysqllock.CreateTable(ctx, db, ""); err != nil {
		tb.Fatal(err)
	}
	for _, q := range myRawSchema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			tb.Fatal(err)
		}
	}
	return db
}

// The raw lease row: the statements a hand-written lock would use on the
// same InnoDB table type (same durability), without token, holder or the
// take-over of an expired row.
var myRawSchema = []string{
	"CREATE TABLE raw_locks (lock_key VARBINARY(512) PRIMARY KEY, owner CHAR(32) NOT NULL, expires_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
	"CREATE TABLE counters (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
	"INSERT INTO counters VALUES (1, 0)",
}

const (
	myRawAcquire = "INSERT IGNORE INTO raw_locks (lock_key, owner, expires_at) VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL 30 SECOND)"
	myRawRelease = "DELETE FROM raw_locks WHERE lock_key = ? AND owner = ?"
)

func myPeers(tb testing.TB, db *sql.DB) (names []string, m map[string]mutex) {
	l, err := mysqllock.New(db, lock.Options{TTL: benchTTL})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	acquire, err := db.Prepare(myRawAcquire)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = acquire.Close() })
	release, err := db.Prepare(myRawRelease)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = release.Close() })
	m = map[string]mutex{
		"haita": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			le, err := l.Acquire(ctx, key)
			if err != nil {
				return nil, err
			}
			return le.Release, nil
		}),
		// GET_LOCK on a connection held for the whole hold: the server
		// queues waiters; nothing is written.
		"raw-get-lock": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			c, err := db.Conn(ctx)
			if err != nil {
				return nil, err
			}
			var ok sql.NullInt64
			if err := c.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", key).Scan(&ok); err != nil || ok.Int64 != 1 {
				_ = c.Close()
				return nil, errors.Join(err, fmt.Errorf("GET_LOCK = %v", ok))
			}
			return func(ctx context.Context) error {
				defer c.Close()
				_, err := c.ExecContext(ctx, "DO RELEASE_LOCK(?)", key)
				return err
			}, nil
		}),
		// The raw lease-row pair, prepared; a waiter polls every millisecond.
		"raw-lease-row": rawLeaseRow(func(ctx context.Context, key, owner string) (bool, error) {
			return rawTry(ctx, acquire, key, owner)
		}, func(ctx context.Context, key, owner string) (bool, error) {
			res, err := release.ExecContext(ctx, key, owner)
			if err != nil {
				return false, err
			}
			n, _ := res.RowsAffected()
			return n == 1, nil
		}),
	}
	return []string{"raw-get-lock", "raw-lease-row", "haita"}, m
}

// BenchmarkMySQLUncontended: one goroutine acquires and releases one key
// that nobody else wants, again and again, on MariaDB. "raw-update" is one
// durable single-row UPDATE per op, for calibration: a lease-row lock
// costs two such commits.
func BenchmarkMySQLUncontended(b *testing.B) {
	db := startMaria(b)
	names, m := myPeers(b, db)
	benchRawUpdate(b, func(ctx context.Context) error {
		_, err := db.ExecContext(ctx, "UPDATE counters SET n = n + 1 WHERE id = 1")
		return err
	})
	benchUncontended(b, names, m, "myu:")
}

// BenchmarkMySQLHotKey: 8 goroutines on one key, each taking it again as
// soon as it let go. haita's goroutines share one Locker, which hands the
// key to the next of its own waiters on each release; raw-lease-row polls every
// millisecond; GET_LOCK waits in the server.
func BenchmarkMySQLHotKey(b *testing.B) {
	db := startMaria(b)
	names, m := myPeers(b, db)
	const workers = 8
	benchHotKey(b, names, m, "myh:", workers)
}

// rawTry makes one attempt of the raw lease row. INSERT racing DELETE on
// one key deadlocks in InnoDB now and then; the victim was rolled back and
// counts as not acquired.
func rawTry(ctx context.Context, acquire *sql.Stmt, key, owner string) (bool, error) {
	res, err := acquire.ExecContext(ctx, key, owner)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1213 {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// BenchmarkPairedUncontended interleaves, in every iteration, one
// uncontended acquire+release of each contender: mysqllock and the raw
// lease-row pair on MariaDB, pglock and the raw lease-row pair on
// PostgreSQL. This machine's disk stalls for milliseconds now and then;
// sub-benchmarks run one after the other see different stalls, while
// interleaved ones share them, so the ratios here are the ones to compare.
// Reports each contender's mean ops/s and the haita / raw ratio per engine.
func BenchmarkPairedUncontended(b *testing.B) {
	my := startMaria(b)
	pool := startPG(b)
	_, myM := myPeers(b, my)
	_, pgM := pgPeers(b, pool)
	contenders := []struct {
		name string
		mu   mutex
		key  string
	}{
		{"mysql-raw", myM["raw-lease-row"], uniqueKey("pair-myr:")},
		{"mysql-haita", myM["haita"], uniqueKey("pair-myh:")},
		{"pg-raw", pgM["raw-lease-row"], uniqueKey("pair-pgr:")},
		{"pg-haita", pgM["haita"], uniqueKey("pair-pgh:")},
	}
	ctx := context.Background()
	spent := make([]time.Duration, len(contenders))
	for b.Loop() {
		for i, c := range contenders {
			t0 := time.Now()
			unlock, err := c.mu.lock(ctx, c.key)
			if err != nil {
				b.Fatal(err)
			}
			if err := unlock(ctx); err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(t0)
		}
	}
	opsPerSec := func(i int) float64 { return float64(b.N) / spent[i].Seconds() }
	for i, c := range contenders {
		b.ReportMetric(opsPerSec(i), c.name+"-ops/s")
	}
	b.ReportMetric(opsPerSec(1)/opsPerSec(0), "mysql-haita/raw")
	b.ReportMetric(opsPerSec(3)/opsPerSec(2), "pg-haita/raw")
}
