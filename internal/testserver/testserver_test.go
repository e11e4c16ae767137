package testserver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t, testserver.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()

	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("Get = %q, %v; want v", got, err)
	}

	srv.Pause()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Error("Ping succeeded while the server was paused")
	}
	srv.Resume()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("Ping after Resume: %v", err)
	}

	srv.Kill()
	srv.Kill() // idempotent
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Error("Ping succeeded after Kill")
	}
	srv.Start()
	if err := rdb.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("Get after a restart without persistence = %v; want redis.Nil", err)
	}
	srv.Stop()
	srv.Stop() // idempotent
}

func TestRedisAppendOnly(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t, testserver.RedisOptions{AppendOnly: true})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()

	for _, tc := range []struct {
		name string
		down func()
	}{
		{"Stop", srv.Stop},
		{"Kill", srv.Kill},
	} {
		key := "before-" + tc.name
		if err := rdb.Set(ctx, key, tc.name, 0).Err(); err != nil {
			t.Fatal(err)
		}
		tc.down()
		srv.Start()
		if got, err := rdb.Get(ctx, key).Result(); err != nil || got != tc.name {
			t.Errorf("after %s and Start: Get(%s) = %q, %v; want %q", tc.name, key, got, err, tc.name)
		}
	}
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	c := testserver.RedisCluster(t, 3)
	if n := len(c.Addrs()); n != 3 {
		t.Fatalf("len(Addrs()) = %d; want 3", n)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()

	// Enough keys to land on every master.
	for i := range 30 {
		if err := rdb.Set(ctx, "key"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		if got, err := rdb.Get(ctx, "key"+strconv.Itoa(i)).Int(); err != nil || got != i {
			t.Fatalf("Get(key%d) = %d, %v", i, got, err)
		}
	}
	var mu sync.Mutex
	withKeys := 0
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if n > 0 {
			mu.Lock()
			withKeys++
			mu.Unlock()
		}
		return err
	})
	if err != nil || withKeys != 3 {
		t.Errorf("masters holding keys = %d, %v; want 3", withKeys, err)
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var dropped string
	t.Run("create", func(t *testing.T) {
		dsn := testserver.Postgres(t)
		other := testserver.Postgres(t)
		if dsn == other {
			t.Fatalf("two calls returned the same DSN %s", dsn)
		}
		dropped = dsn

		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "CREATE TABLE kv (k text PRIMARY KEY, v text)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO kv VALUES ('k', 'v')"); err != nil {
			t.Fatal(err)
		}

		// The same DSN through pgx's database/sql driver.
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v string
		if err := db.QueryRowContext(ctx, "SELECT v FROM kv WHERE k = 'k'").Scan(&v); err != nil || v != "v" {
			t.Fatalf("SELECT = %q, %v; want v", v, err)
		}
		var maxConns int
		if err := db.QueryRowContext(ctx, "SELECT current_setting('max_connections')::int").Scan(&maxConns); err != nil || maxConns != 300 {
			t.Errorf("max_connections = %d, %v; want 300", maxConns, err)
		}
	})
	// The subtest's cleanup dropped its database.
	conn, err := pgx.Connect(ctx, dropped)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		if err == nil {
			conn.Close(ctx)
		}
		t.Errorf("connecting to the database after its test ended: %v; want invalid_catalog_name (3D000)", err)
	}
}

func TestPostgresServer(t *testing.T) {
	t.Parallel()
	srv := testserver.PostgresServer(t)
	ctx := t.Context()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	count := func() int {
		t.Helper()
		conn, err := pgx.Connect(ctx, srv.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if err := exec("CREATE TABLE t (id int)"); err != nil {
		t.Fatal(err)
	}
	for i, down := range []func(){srv.Stop, srv.Kill} {
		if err := exec("INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		// A backend busy computing does not notice its server's death by itself; Kill must end
		// it too, or the restart finds the old shared memory still in use.
		busy := make(chan error, 1)
		go func() { busy <- exec("SELECT count(*) FROM generate_series(1, 1e12)") }()
		if err := waitActive(ctx, srv.DSN("postgres")); err != nil {
			t.Fatal(err)
		}
		down()
		select {
		case err := <-busy:
			if err == nil {
				t.Fatal("the busy query succeeded")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the busy query still runs after the server went down")
		}
		if err := exec("SELECT 1"); err == nil {
			t.Fatal("query succeeded on a server that is down")
		}
		srv.Start()
		if n := count(); n != i+1 {
			t.Fatalf("rows after restart %d = %d; want %d (committed rows survive)", i+1, n, i+1)
		}
	}
}

// waitActive waits until a query of another session is running on the server at dsn.
func waitActive(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n)
		if err != nil || n > 0 {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMariaDB(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var dropped string
	t.Run("create", func(t *testing.T) {
		dsn := testserver.MariaDB(t)
		if !strings.Contains(dsn, "parseTime=true") {
			t.Errorf("DSN %s lacks parseTime=true", dsn)
		}
		dropped = dsn
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "CREATE TABLE kv (k varchar(64) PRIMARY KEY, v text, at datetime(6))"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO kv VALUES ('k', 'v', NOW(6))"); err != nil {
			t.Fatal(err)
		}
		var v string
		var at time.Time // needs parseTime=true
		if err := db.QueryRowContext(ctx, "SELECT v, at FROM kv WHERE k = 'k'").Scan(&v, &at); err != nil || v != "v" || at.IsZero() {
			t.Fatalf("SELECT = %q, %v, %v", v, at, err)
		}
		var wait int
		if err := db.QueryRowContext(ctx, "SELECT @@innodb_lock_wait_timeout").Scan(&wait); err != nil || wait != 10 {
			t.Errorf("innodb_lock_wait_timeout = %d, %v; want 10", wait, err)
		}
		// A connection left open does not stop the cleanup from dropping the database.
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "SELECT * FROM kv FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
	})
	db, err := sql.Open("mysql", dropped)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.PingContext(ctx)
	var myErr *mysql.MySQLError
	if !errors.As(err, &myErr) || myErr.Number != 1049 {
		t.Errorf("connecting to the database after its test ended: %v; want unknown database (1049)", err)
	}
}

func etcdClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestEtcd(t *testing.T) {
	t.Parallel()
	c := testserver.Etcd(t, 1)
	if eps := c.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") {
		t.Fatalf("Endpoints() = %q", eps)
	}
	cli := etcdClient(t, c.Endpoints()...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}
}

func TestEtcdThreeMembers(t *testing.T) {
	t.Parallel()
	c := testserver.Etcd(t, 3)
	eps := c.Endpoints()
	if len(eps) != 3 {
		t.Fatalf("Endpoints() = %q; want 3", eps)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	c.StopMember(0)
	rest := etcdClient(t, eps[1:]...)
	if _, err := rest.Put(ctx, "k", "written with member 0 down"); err != nil {
		t.Fatalf("Put with one of three members down: %v", err)
	}
	c.StartMember(0)

	// Member 0 caught up: a linearizable read through it alone sees the write.
	resp, err := etcdClient(t, eps[0]).Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get through the restarted member = %v, %v", resp, err)
	}

	c.KillMember(2)
	// A proposal in flight to a killed leader is lost and times out on the server, so a client
	// tries again until a new leader commits it.
	for {
		attempt, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := rest.Put(attempt, "k2", "written with member 2 killed")
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Put with one of three members killed: %v", err)
		}
	}
	c.StartMember(2)
}

// TestChildProcess re-executes the test binary to run itself again as a child process, which
// must get the parent's Redis and PostgreSQL database, and writes to both.
func TestChildProcess(t *testing.T) {
	t.Parallel()
	srv := testserver.Redis(t, testserver.RedisOptions{})
	dsn := testserver.Postgres(t)
	ctx := t.Context()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })

	if os.Getenv("HAITA_TS_CHILD") == "1" {
		if n := len(testserver.ChildEnv()); n < 2 {
			t.Errorf("ChildEnv() has %d variables; want at least 2 (Redis and Postgres)", n)
		}
		pid := strconv.Itoa(os.Getpid())
		if err := rdb.Set(ctx, "child-pid", pid, 0).Err(); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "CREATE TABLE child (pid text); INSERT INTO child VALUES ('"+pid+"')"); err != nil {
			t.Fatal(err)
		}

		// The child does not own the parent's servers.
		rec := &recorder{TB: t}
		child := testserver.Redis(rec, testserver.RedisOptions{}) // this test's first Redis: the parent's
		if child.Addr() != srv.Addr() {
			t.Errorf("second handle has address %s; want %s", child.Addr(), srv.Addr())
		}
		for _, op := range []func(){child.Stop, child.Kill, child.Start, child.Pause, child.Resume} {
			op()
		}
		if got := rec.fatals(); len(got) != 5 || !strings.Contains(got[0], "not owner") {
			t.Errorf("owner-only methods in a child: fatals %q; want 5 saying not owner", got)
		}
		return
	}

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "HAITA_TS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestChildProcess") {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	childPID, err := rdb.Get(ctx, "child-pid").Result()
	if err != nil || childPID == strconv.Itoa(os.Getpid()) {
		t.Fatalf("child's Redis write: %q, %v", childPID, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pgPID string
	if err := conn.QueryRow(ctx, "SELECT pid FROM child").Scan(&pgPID); err != nil || pgPID != childPID {
		t.Fatalf("child's PostgreSQL write: %q, %v; want %q", pgPID, err, childPID)
	}
}

// TestMissingBinary checks the skip-or-fail rule with a PATH on which redis-server is missing.
func TestMissingBinary(t *testing.T) {
	for _, tc := range []struct {
		require       string
		fatals, skips int
	}{
		{require: "", skips: 1},
		{require: "1", fatals: 1},
	} {
		t.Run(fmt.Sprintf("HAITA_REQUIRE_SERVERS=%q", tc.require), func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("HAITA_REQUIRE_SERVERS", tc.require)
			rec := &recorder{TB: t}
			if srv := testserver.Redis(rec, testserver.RedisOptions{}); srv != nil {
				t.Errorf("Redis returned a server")
			}
			fatals, skips := rec.fatals(), rec.skips()
			if len(fatals) != tc.fatals || len(skips) != tc.skips {
				t.Fatalf("fatals %q, skips %q; want %d and %d", fatals, skips, tc.fatals, tc.skips)
			}
			msg := strings.Join(append(fatals, skips...), "")
			if !strings.Contains(msg, "redis-server") || !strings.Contains(msg, "Debian package") {
				t.Errorf("message %q names neither the binary nor the package", msg)
			}
		})
	}
}

// recorder is a testing.TB whose Fatal and Skip record the message and return, so a test can
// check them.
type recorder struct {
	testing.TB
	mu          sync.Mutex
	fatal, skip []string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatal(args ...any) { r.record(&r.fatal, fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.record(&r.fatal, fmt.Sprintf(format, args...))
}
func (r *recorder) Skip(args ...any) { r.record(&r.skip, fmt.Sprint(args...)) }
func (r *recorder) Skipf(format string, args ...any) {
	r.record(&r.skip, fmt.Sprintf(format, args...))
}

func (r *recorder) record(to *[]string, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*to = append(*to, msg)
}

func (r *recorder) fatals() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.fatal...)
}

func (r *recorder) skips() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.skip...)
}

// TestCrashedBinary runs itself as a child process that starts servers and then exits without
// cleaning up, as a crashed test binary would: its servers must die with it, and the next test
// binary's Main must remove the directories it left.
func TestCrashedBinary(t *testing.T) {
	t.Parallel()
	if os.Getenv("HAITA_TS_CHILD") == "crash" {
		srv := testserver.Redis(t, testserver.RedisOptions{})
		dsn := testserver.Postgres(t)
		fmt.Printf("PID=%d\nREDIS=%s\nPOSTGRES=%s\n", os.Getpid(), srv.Addr(), dsn)
		os.Exit(3)
	}
	ctx := t.Context()
	child := func(run, mode string) string {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run="+run, "-test.count=1")
		cmd.Env = append(os.Environ(), "HAITA_TS_CHILD="+mode)
		out, err := cmd.Output()
		if mode == "crash" {
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 3 {
				t.Fatalf("crashing child: %v\n%s", err, out)
			}
		} else if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return string(out)
	}
	out := child("^TestCrashedBinary$", "crash")
	var pid, redisAddr, pgDSN string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "PID="); ok {
			pid = v
		}
		if v, ok := strings.CutPrefix(line, "REDIS="); ok {
			redisAddr = v
		}
		if v, ok := strings.CutPrefix(line, "POSTGRES="); ok {
			pgDSN = v
		}
	}
	if pid == "" || redisAddr == "" || pgDSN == "" {
		t.Fatalf("crashing child printed no servers:\n%s", out)
	}

	// The servers die with the binary (their parent-death signal).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, redisErr := net.DialTimeout("tcp", redisAddr, 2*time.Second)
		if redisErr == nil {
			c.Close()
		}
		pgCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, pgErr := pgx.Connect(pgCtx, pgDSN)
		cancel()
		if pgErr == nil {
			conn.Close(ctx)
		}
		if redisErr != nil && pgErr != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers of a dead test binary still answer: redis %v, postgres %v", redisErr, pgErr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A later test binary's Main removes the crashed one's directories.
	owned := func() (dirs []string) {
		files, _ := filepath.Glob(filepath.Join(os.TempDir(), "haita-ts-*", "owner.pid"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && string(b) == pid {
				dirs = append(dirs, filepath.Dir(f))
			}
		}
		return dirs
	}
	if len(owned()) == 0 {
		// Another test binary starting in the meantime swept them already.
		t.Logf("the crashed child's directories are gone before the check")
	}
	child("^$", "")
	if dirs := owned(); len(dirs) > 0 {
		t.Errorf("directories of the crashed child (pid %s) are still there: %q", pid, dirs)
	}
}
