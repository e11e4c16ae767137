package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/redislock"
)

// BenchmarkRedisForeign: a client other than haita holds a key that a
// haita Locker waits for, then releases it (event=del) or lets it expire
// (event=expiry). Reports how long after the release (from the moment the
// command was sent to the other client) or the expiry the waiter held the
// key, in µs, with the server's keyspace notifications on ("Kgx") and off
// (then only the waiter's poll, every second by default, finds a foreign
// release). The other client is node-redlock on ioredis (bench/foreign,
// after `npm install` there) or, without node, go-redis taking the key
// with SET NX PX and deleting it with a compare-and-delete script.
//
//	cd bench/foreign && npm install && cd .. && go test -run '^$' -bench 'RedisForeign' -benchtime 1x -count 1 .
func BenchmarkRedisForeign(b *testing.B) {
	c := needRedis(b, 0)
	for _, notify := range []string{"on", "off"} {
		for _, event := range []string{"del", "expiry"} {
			b.Run("notify="+notify+"/event="+event, func(b *testing.B) {
				events := ""
				if notify == "on" {
					events = "Kgx"
				}
				if err := c.ConfigSet(bg, "notify-keyspace-events", events).Err(); err != nil {
					b.Fatal(err)
				}
				defer c.ConfigSet(bg, "notify-keyspace-events", "")
				other, name, err := newForeign(redisServers[0])
				if err != nil {
					b.Fatal(err)
				}
				defer other.close()
				l, err := redislock.New(c, lock.Options{TTL: benchTTL})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				rounds := 20
				if notify == "off" && event == "del" {
					rounds = 8 // each waits for the poll: half a second on average
				}
				// A first round connects the other client.
				if _, err := foreignRound(c, other, l, "del"); err != nil {
					b.Fatal(err)
				}
				var wakes []time.Duration
				for range rounds {
					d, err := foreignRound(c, other, l, event)
					if err != nil {
						b.Fatal(err)
					}
					wakes = append(wakes, d)
				}
				slices.Sort(wakes)
				us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
				b.ReportMetric(us(quantile(wakes, 0.5)), "wake-p50-µs")
				b.ReportMetric(us(quantile(wakes, 0.99)), "wake-p99-µs")
				b.ReportMetric(us(wakes[len(wakes)-1]), "wake-max-µs")
				b.Logf("other client: %s", name)
			})
		}
	}
}

// foreignRound has other hold a fresh key, a haita waiter queue for it, and
// other release it (or the key expire); it returns how long the waiter took
// after the release or expiry.
func foreignRound(c *redis.Client, other foreign, l *redislock.Locker, event string) (time.Duration, error) {
	key := uniqueKey("foreign:")
	ttl := time.Minute
	if event == "expiry" {
		ttl = 300 * time.Millisecond
	}
	if _, err := other.hold(key, ttl); err != nil {
		return 0, err
	}
	pttl, err := c.PTTL(bg, key).Result()
	if err != nil {
		return 0, err
	}
	from := time.Now().Add(pttl) // when the key expires, within a round trip
	got := make(chan error, 1)
	var at time.Time
	go func() {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		le, err := l.Acquire(ctx, key)
		at = time.Now()
		if err == nil {
			err = le.Release(bg)
		}
		got <- err
	}()
	for l.Waiting(key) == 0 {
		time.Sleep(time.Millisecond)
	}
	if event == "del" {
		if from, err = other.release(); err != nil {
			return 0, err
		}
	}
	if err := <-got; err != nil {
		return 0, err
	}
	return max(at.Sub(from), 0), nil
}

// foreign is a Redis lock client other than haita.
type foreign interface {
	// hold takes key with ttl and returns when the command was sent.
	hold(key string, ttl time.Duration) (time.Time, error)
	// release releases the key held and returns when the command was sent.
	release() (time.Time, error)
	close()
}

// newForeign returns node-redlock when node and bench/foreign/node_modules
// are there, else a go-redis client.
func newForeign(addr string) (foreign, string, error) {
	if _, err := exec.LookPath("node"); err == nil {
		if _, err := os.Stat(filepath.Join("foreign", "node_modules", "redlock")); err == nil {
			n, err := startNode(addr)
			return n, "node-redlock (ioredis)", err
		}
	}
	return &goForeign{c: redis.NewClient(&redis.Options{Addr: addr})}, "go-redis SET NX PX", nil
}

type nodeForeign struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startNode(addr string) (*nodeForeign, error) {
	cmd := exec.Command("node", filepath.Join("foreign", "hold.js"), "redis://"+addr)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &nodeForeign{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}, nil
}

func (n *nodeForeign) do(line, want string) (time.Time, error) {
	sent := time.Now()
	if _, err := io.WriteString(n.stdin, line+"\n"); err != nil {
		return sent, err
	}
	got, err := n.out.ReadString('\n')
	if err != nil {
		return sent, err
	}
	if got != want+"\n" {
		return sent, fmt.Errorf("node-redlock: %q answered %q", line, got)
	}
	return sent, nil
}

func (n *nodeForeign) hold(key string, ttl time.Duration) (time.Time, error) {
	return n.do("hold "+key+" "+strconv.FormatInt(ttl.Milliseconds(), 10), "held")
}

func (n *nodeForeign) release() (time.Time, error) { return n.do("release", "released") }

func (n *nodeForeign) close() {
	_ = n.stdin.Close()
	_ = n.cmd.Wait()
}

type goForeign struct {
	c          *redis.Client
	key, owner string
}

func (g *goForeign) hold(key string, ttl time.Duration) (time.Time, error) {
	sent := time.Now()
	g.key, g.owner = key, "foreign-"+key
	for {
		ok, err := g.c.SetNX(bg, key, g.owner, ttl).Result()
		if err != nil || ok {
			return sent, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (g *goForeign) release() (time.Time, error) {
	sent := time.Now()
	n, err := releaseLua.Run(bg, g.c, []string{g.key}, g.owner).Int64()
	if err == nil && n != 1 {
		err = errors.New("go-redis: the key was not held")
	}
	return sent, err
}

func (g *goForeign) close() { _ = g.c.Close() }
