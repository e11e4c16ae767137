package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
)

// The cross-process shapes of the Redis hot key: 8 contenders on one key,
// each taking it again as soon as it let go, as one Locker shared by 8
// goroutines (shape=shared), one Locker per goroutine (shape=lockers) and
// one Locker in each of 8 OS processes (shape=processes: the test binary
// started again as a contender); lib=redlock is haita's Redlock over three
// instances, beside redsync over the same three (redsync3-1ms). The peers hold no state between calls, so
// their goroutines are already independent contenders; they run in
// processes as well for the same run. Each run lasts crossRun, whatever
// b.N: run with -benchtime 1x.
//
//	cd bench && for i in 1 2 3; do go test -run '^$' -bench 'RedisCross' -benchtime 1x -count 1 .; done

const crossRun = 2 * time.Second

// childEnv names the contender a re-started test binary plays.
const childEnv = "HAITA_BENCH_CHILD"

// BenchmarkRedisCross reports handoffs/s, wait percentiles in µs and the
// smallest and largest share of the grants in percent, per shape.
func BenchmarkRedisCross(b *testing.B) {
	needRedis(b, 2)
	addrs := redisServers[:3]
	const workers = 8
	for _, lib := range []string{"haita", "bsm-1ms", "redsync-1ms", "redlock", "redsync3-1ms"} {
		shapes := []string{"lockers", "processes"}
		if lib == "haita" || lib == "redlock" {
			shapes = []string{"shared", "lockers", "processes"}
		}
		for _, shape := range shapes {
			b.Run("lib="+lib+"/shape="+shape+"/g=8", func(b *testing.B) {
				key := uniqueKey("cross:")
				var res hotKeyResult
				var err error
				switch shape {
				case "processes":
					res, err = runHotKeyProcs(lib, addrs, key, workers, crossRun)
				case "shared":
					mu, stop, err2 := contender(lib, addrs)
					if err2 != nil {
						b.Fatal(err2)
					}
					defer stop()
					res, err = runHotKeyFor(context.Background(), slices.Repeat([]mutex{mu}, workers), key, crossRun)
				default:
					mus := make([]mutex, workers)
					for g := range mus {
						mu, stop, err2 := contender(lib, addrs)
						if err2 != nil {
							b.Fatal(err2)
						}
						defer stop()
						mus[g] = mu
					}
					res, err = runHotKeyFor(context.Background(), mus, key, crossRun)
				}
				if err != nil {
					b.Fatal(err)
				}
				reportHotKey(b, res, len(res.waits))
			})
		}
	}
}

// contender returns one contender of lib on the redis-servers at addrs,
// with clients of its own, and the function that closes them. The Redlock
// contenders use the first three servers, the others the first.
func contender(lib string, addrs []string) (mutex, func(), error) {
	var clients []*redis.Client
	stop := func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}
	n := 1
	if lib == "redlock" || lib == "redsync3-1ms" {
		n = 3
	}
	if len(addrs) < n {
		return nil, nil, fmt.Errorf("bench: %s needs %d redis-servers", lib, n)
	}
	for _, a := range addrs[:n] {
		clients = append(clients, redis.NewClient(&redis.Options{Addr: a}))
	}
	c := clients[0]
	var mu mutex
	switch lib {
	case "haita", "redlock":
		var l lock.Locker
		var err error
		if lib == "haita" {
			l, err = redislock.New(c, lock.Options{TTL: benchTTL})
		} else {
			scripters := make([]redis.Scripter, n)
			for i, c := range clients {
				scripters[i] = c
			}
			l, err = redlock.New(scripters, lock.Options{TTL: benchTTL})
		}
		if err != nil {
			stop()
			return nil, nil, err
		}
		closeClients := stop
		stop = func() { _ = l.Close(); closeClients() }
		mu = mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			le, err := l.Acquire(ctx, key)
			if err != nil {
				return nil, err
			}
			return le.Release, nil
		})
	case "bsm-1ms":
		mu = bsmMutex(bsm.New(c), bsm.LinearBackoff(time.Millisecond))
	case "redsync-1ms", "redsync3-1ms":
		pools := make([]rsredis.Pool, n)
		for i, c := range clients {
			pools[i] = rsgoredis.NewPool(c)
		}
		mu = redsyncMutex(redsync.New(pools...), redsync.WithExpiry(benchTTL),
			redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(1<<30))
	default:
		stop()
		return nil, nil, fmt.Errorf("bench: no contender %q", lib)
	}
	return mu, stop, nil
}

// runHotKeyFor has contender g of mus take key again and again for d, and
// records every wait.
func runHotKeyFor(ctx context.Context, mus []mutex, key string, d time.Duration) (hotKeyResult, error) {
	res := hotKeyResult{shares: make([]int, len(mus))}
	waits := make([][]time.Duration, len(mus))
	var stop atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for g, mu := range mus {
		wg.Go(func() {
			for !stop.Load() {
				t0 := time.Now()
				unlock, err := mu.lock(ctx, key)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				waits[g] = append(waits[g], time.Since(t0))
				res.shares[g]++
				if err := unlock(ctx); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, w := range waits {
		res.waits = append(res.waits, w...)
	}
	slices.Sort(res.waits)
	return res, firstErr
}

// runHotKeyProcs starts procs copies of the test binary, each one contender
// of lib on key, lets them run for d and collects their waits.
func runHotKeyProcs(lib string, addrs []string, key string, procs int, d time.Duration) (hotKeyResult, error) {
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	children := make([]child, 0, procs)
	defer func() {
		for _, ch := range children {
			_ = ch.stdin.Close()
			_ = ch.cmd.Process.Kill()
			_ = ch.cmd.Wait()
		}
	}()
	for range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
		cmd.Env = append(os.Environ(), childEnv+"=redis-hot", "HAITA_BENCH_LIB="+lib,
			"HAITA_BENCH_ADDRS="+strings.Join(addrs, ","), "HAITA_BENCH_KEY="+key)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
		ch := child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
		children = append(children, ch)
		if line, err := ch.out.ReadString('\n'); err != nil || line != "ready\n" {
			return hotKeyResult{}, fmt.Errorf("bench: contender process said %q, %v", line, err)
		}
	}
	start := time.Now()
	for _, ch := range children {
		if _, err := io.WriteString(ch.stdin, "go\n"); err != nil {
			return hotKeyResult{}, err
		}
	}
	time.Sleep(d)
	for _, ch := range children {
		_ = ch.stdin.Close()
	}
	res := hotKeyResult{}
	for _, ch := range children {
		var waits []int64
		if err := json.NewDecoder(ch.out).Decode(&waits); err != nil {
			return hotKeyResult{}, fmt.Errorf("bench: contender process: %w", err)
		}
		res.shares = append(res.shares, len(waits))
		for _, w := range waits {
			res.waits = append(res.waits, time.Duration(w)*time.Microsecond)
		}
	}
	res.elapsed = time.Since(start)
	slices.Sort(res.waits)
	return res, nil
}

// runChild plays the contender named by childEnv and returns the exit code.
func runChild() int {
	addrs := strings.Split(os.Getenv("HAITA_BENCH_ADDRS"), ",")
	if err := hotKeyChild(os.Getenv("HAITA_BENCH_LIB"), addrs, os.Getenv("HAITA_BENCH_KEY")); err != nil {
		fmt.Fprintln(os.Stderr, "bench contender:", err)
		return 1
	}
	return 0
}

// hotKeyChild is one contender process of runHotKeyProcs: it says "ready",
// waits for "go" on stdin, takes key again and again until stdin closes,
// and writes its waits in µs as one JSON array.
func hotKeyChild(lib string, addrs []string, key string) error {
	ctx := context.Background()
	mu, stop, err := contender(lib, addrs)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return err
	}
	var done atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, in)
		done.Store(true)
	}()
	waits := []int64{}
	for !done.Load() {
		t0 := time.Now()
		unlock, err := mu.lock(ctx, key)
		if err != nil {
			return err
		}
		waits = append(waits, time.Since(t0).Microseconds())
		if err := unlock(ctx); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(waits)
}
