package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServers are the redis-servers every benchmark and test of this
// binary shares, started by TestMain: one address each, started once so that
// every library is measured against the same servers in the same run.
var redisServers []string

var bg = context.Background()

const redisInstances = 5

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	stop, err := startRedis(redisInstances)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startRedis starts n redis-servers without persistence on free loopback
// ports. Without redis-server installed the Redis benchmarks skip.
func startRedis(n int) (stop func(), err error) {
	var procs []*exec.Cmd
	stop = func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return stop, nil
	}
	dir, err := os.MkdirTemp("", "haita-bench-redis-")
	if err != nil {
		return stop, err
	}
	for i := range n {
		port, err := freePort()
		if err != nil {
			return stop, err
		}
		d := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return stop, err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", d, "--logfile", filepath.Join(d, "redis.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return stop, err
		}
		procs = append(procs, cmd)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		deadline := time.Now().Add(10 * time.Second)
		for c.Ping(bg).Err() != nil {
			if time.Now().After(deadline) {
				c.Close()
				return stop, fmt.Errorf("redis-server on %s did not start", addr)
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
		redisServers = append(redisServers, addr)
	}
	prev := stop
	return func() { prev(); os.RemoveAll(dir) }, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// needRedis skips tb without redis-server and returns a fresh client on
// instance i, closed by tb's cleanup.
func needRedis(tb testing.TB, i int) *redis.Client {
	tb.Helper()
	if len(redisServers) <= i {
		tb.Skip("redis-server is not installed (Debian package redis-server)")
	}
	c := redis.NewClient(&redis.Options{Addr: redisServers[i]})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
