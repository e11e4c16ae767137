package bench

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/mysqllock"
	"github.com/haita/haita/lock/pglock"
)

// The cross-process shapes of the hot-key benchmarks: every contender has a
// Locker of its own, as separate processes would, first as goroutines of
// this process ("lockers") and then as separate OS processes ("procs"):
// this test binary started again in child mode, one per contender, each
// with its own client and Locker, taking the key for a fixed time and
// reporting its waits on stdout.
//
//	cd bench && for i in 1 2 3; do go test -run '^$' -bench 'BenchmarkEtcdUncontended|BenchmarkPGUncontended|HotKeyEach' -benchtime 1s -count 1 -timeout 20m .; done

// xprocEnv selects child mode: "pg", "mysql" or "etcd". The other variables are the
// server address, the key and how long to take it.
const (
	xprocEnv     = "HAITA_BENCH_XPROC"
	childAddrEnv = "HAITA_BENCH_ADDR"
	childKeyEnv  = "HAITA_BENCH_KEY"
	childForEnv  = "HAITA_BENCH_FOR"
)

// procsFor is how long each process shape takes the key.
const procsFor = 3 * time.Second

// Child mode runs before TestMain, so that children start no servers.
func init() {
	if os.Getenv(xprocEnv) == "" {
		return
	}
	if err := runXprocChild(); err != nil {
		fmt.Fprintln(os.Stderr, "bench child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runXprocChild builds one Locker, says "ready", waits for a line on stdin, then
// takes and releases the key until the time is up and prints its waits in
// nanoseconds on one line.
func runXprocChild() error {
	ctx := context.Background()
	addr, key := os.Getenv(childAddrEnv), os.Getenv(childKeyEnv)
	d, err := time.ParseDuration(os.Getenv(childForEnv))
	if err != nil {
		return err
	}
	var l lock.Locker
	switch os.Getenv(xprocEnv) {
	case "pg":
		pool, err := pgxpool.New(ctx, addr)
		if err != nil {
			return err
		}
		defer pool.Close()
		if err := pool.Ping(ctx); err != nil {
			return err
		}
		if l, err = pglock.New(pool, lock.Options{TTL: benchTTL}); err != nil {
			return err
		}
	case "mysql":
		db, err := sql.Open("mysql", addr)
		if err != nil {
			return err
		}
		defer db.Close()
		if err := db.PingContext(ctx); err != nil {
			return err
		}
		if l, err = mysqllock.New(db, lock.Options{TTL: benchTTL}); err != nil {
			return err
		}
	case "etcd":
		cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(addr, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		if l, err = etcdlock.New(cli, lock.Options{TTL: benchTTL}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown %s", xprocEnv)
	}
	defer l.Close()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return err
	}
	var waits []string
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		t0 := time.Now()
		le, err := l.Acquire(ctx, key)
		if err != nil {
			return err
		}
		waits = append(waits, strconv.FormatInt(int64(time.Since(t0)), 10))
		if err := le.Release(ctx); err != nil {
			return err
		}
	}
	fmt.Println(strings.Join(waits, " "))
	return nil
}

// runXprocHotKey starts one child process per contender, lets them all go
// at once and collects their waits. elapsed runs from the go to the last
// child's report, so it includes the last holds that ran past the time.
func runXprocHotKey(engine, addr, key string, procs int) (hotKeyResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return hotKeyResult{}, err
	}
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var children []child
	defer func() {
		for _, c := range children {
			_ = c.stdin.Close()
			_ = c.cmd.Wait()
		}
	}()
	for range procs {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), xprocEnv+"="+engine, childAddrEnv+"="+addr,
			childKeyEnv+"="+key, childForEnv+"="+procsFor.String())
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return hotKeyResult{}, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return hotKeyResult{}, err
		}
		if err := cmd.Start(); err != nil {
			return hotKeyResult{}, err
		}
		c := child{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20)}
		children = append(children, c)
		if line, err := c.out.ReadString('\n'); err != nil || line != "ready\n" {
			return hotKeyResult{}, fmt.Errorf("child not ready: %q %v", line, err)
		}
	}
	start := time.Now()
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return hotKeyResult{}, err
		}
	}
	res := hotKeyResult{shares: make([]int, procs)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, procs)
	for i, c := range children {
		wg.Go(func() {
			line, err := c.out.ReadString('\n')
			if err != nil {
				errs[i] = fmt.Errorf("child %d: %w", i, err)
				return
			}
			fields := strings.Fields(line)
			mu.Lock()
			defer mu.Unlock()
			res.shares[i] = len(fields)
			for _, f := range fields {
				ns, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					errs[i] = err
					return
				}
				res.waits = append(res.waits, time.Duration(ns))
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.waits)
	if len(res.waits) == 0 {
		return res, errors.New("no acquisitions")
	}
	return res, errors.Join(errs...)
}

// runHotKeyEach is runHotKey with a mutex of its own for every worker:
// worker g uses mus[g].
func runHotKeyEach(ctx context.Context, mus []mutex, key string, n int) (hotKeyResult, error) {
	var left atomic.Int64
	left.Store(int64(n))
	res := hotKeyResult{shares: make([]int, len(mus))}
	waits := make([][]time.Duration, len(mus))
	errs := make([]error, len(mus))
	var wg sync.WaitGroup
	start := time.Now()
	for g, mu := range mus {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				t0 := time.Now()
				unlock, err := mu.lock(ctx, key)
				if err != nil {
					errs[g] = err
					return
				}
				waits[g] = append(waits[g], time.Since(t0))
				res.shares[g]++
				if err := unlock(ctx); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, w := range waits {
		res.waits = append(res.waits, w...)
	}
	slices.Sort(res.waits)
	return res, errors.Join(errs...)
}

// reportRun is reportHotKey for a run whose size is not b.N: the
// acquisitions made, over elapsed.
func reportRun(b *testing.B, res hotKeyResult) {
	n := 0
	for _, s := range res.shares {
		n += s
	}
	reportHotKey(b, res, n)
}

// lockerMutex is one contender's haita Locker as a mutex.
func lockerMutex(l lock.Locker) mutex {
	return mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
		le, err := l.Acquire(ctx, key)
		if err != nil {
			return nil, err
		}
		return le.Release, nil
	})
}

const contenders = 8

// BenchmarkPGHotKeyEach: 8 goroutines on one key, each with a Locker of its
// own (its own LISTEN connection), beside the shared Locker of
// BenchmarkPGHotKey in the same run.
func BenchmarkPGHotKeyEach(b *testing.B) {
	pool := startPG(b)
	_, m := pgPeers(b, pool)
	mus := make([]mutex, contenders)
	for i := range mus {
		l, err := pglock.New(pool, lock.Options{TTL: benchTTL})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		mus[i] = lockerMutex(l)
	}
	b.Run("lib=haita/shape=shared/g=8", func(b *testing.B) {
		res, err := runHotKey(context.Background(), m["haita"], uniqueKey("pge:"), contenders, b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportHotKey(b, res, b.N)
	})
	b.Run("lib=haita/shape=lockers/g=8", func(b *testing.B) {
		res, err := runHotKeyEach(context.Background(), mus, uniqueKey("pge:"), b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportHotKey(b, res, b.N)
	})
	b.Run("lib=haita/shape=procs/g=8", func(b *testing.B) {
		addr := pool.Config().ConnString()
		res, err := runXprocHotKey("pg", addr, uniqueKey("pge:"), contenders)
		if err != nil {
			b.Fatal(err)
		}
		reportRun(b, res)
	})
}

// BenchmarkEtcdHotKeyEach: 8 contenders on one key: concurrency.Mutex (one
// Session per goroutine, as separate processes would have), and haita with
// one shared Locker, one Locker per goroutine and one process per
// contender, in the same run.
func BenchmarkEtcdHotKeyEach(b *testing.B) {
	cli := etcdClient(b)
	_, m := etcdPeers(b, cli, contenders)
	mus := make([]mutex, contenders)
	for i := range mus {
		l, err := etcdlock.New(cli, lock.Options{TTL: benchTTL})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		mus[i] = lockerMutex(l)
	}
	for _, run := range []struct{ name, shape string }{{"etcd-mutex", "sessions"}, {"haita", "shared"}} {
		b.Run("lib="+run.name+"/shape="+run.shape+"/g=8", func(b *testing.B) {
			res, err := runHotKey(context.Background(), m[run.name], uniqueKey("etcde/"), contenders, b.N)
			if err != nil {
				b.Fatal(err)
			}
			reportHotKey(b, res, b.N)
		})
	}
	b.Run("lib=haita/shape=lockers/g=8", func(b *testing.B) {
		res, err := runHotKeyEach(context.Background(), mus, uniqueKey("etcde/"), b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportHotKey(b, res, b.N)
	})
	b.Run("lib=haita/shape=procs/g=8", func(b *testing.B) {
		res, err := runXprocHotKey("etcd", strings.Join(cli.Endpoints(), ","), uniqueKey("etcde/"), contenders)
		if err != nil {
			b.Fatal(err)
		}
		reportRun(b, res)
	})
}

// BenchmarkMySQLHotKeyEach: 8 contenders on one key on MariaDB, as one
// shared mysqllock Locker, one Locker per goroutine and one process per
// contender, in the same run. Across Lockers, waiters poll (MySQL has no
// notification).
func BenchmarkMySQLHotKeyEach(b *testing.B) {
	db := startMaria(b)
	_, m := myPeers(b, db)
	mus := make([]mutex, contenders)
	for i := range mus {
		l, err := mysqllock.New(db, lock.Options{TTL: benchTTL})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		mus[i] = lockerMutex(l)
	}
	b.Run("lib=haita/shape=shared/g=8", func(b *testing.B) {
		res, err := runHotKey(context.Background(), m["haita"], uniqueKey("mye:"), contenders, b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportHotKey(b, res, b.N)
	})
	b.Run("lib=haita/shape=lockers/g=8", func(b *testing.B) {
		res, err := runHotKeyEach(context.Background(), mus, uniqueKey("mye:"), b.N)
		if err != nil {
			b.Fatal(err)
		}
		reportHotKey(b, res, b.N)
	})
	b.Run("lib=haita/shape=procs/g=8", func(b *testing.B) {
		var port int
		if err := db.QueryRow("SELECT @@port").Scan(&port); err != nil {
			b.Fatal(err)
		}
		res, err := runXprocHotKey("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/bench", port), uniqueKey("mye:"), contenders)
		if err != nil {
			b.Fatal(err)
		}
		reportRun(b, res)
	})
}
