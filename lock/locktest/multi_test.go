package locktest_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
)

// mtable is a minimal in-process semaphore and reader-writer backend with
// the engine queue of the network backends (a waiter queues when it
// subscribes), and with deliberate bugs by mode, to prove the suites catch
// them. Mode "" is correct and must pass.
type mtable struct {
	mode string
	mu   sync.Mutex
	keys map[string]*mkey
	tok  lock.Token
}

type mkey struct {
	limit   int
	holders map[lock.Owner]mholder
	queue   []lock.Owner
	subs    map[lock.Owner]chan struct{}
}

type mholder struct {
	weight  int
	expires time.Time
}

func (b *mtable) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "mtable-" + b.mode, TTL: true, Fencing: true, Notify: true,
		Semaphore: true, RWLock: true, CrossProcess: b.mode == "perprocess"}
}
func (b *mtable) DefaultTTL() time.Duration { return 0 }
func (b *mtable) Close() error              { return nil }

// key returns req's key state with expired holders removed. b.mu is held.
func (b *mtable) key(req lock.Request) *mkey {
	k := b.keys[req.Key]
	if k == nil {
		k = &mkey{limit: req.Share.Limit, holders: map[lock.Owner]mholder{}, subs: map[lock.Owner]chan struct{}{}}
		b.keys[req.Key] = k
	}
	for o, h := range k.holders {
		if !h.expires.IsZero() && time.Now().After(h.expires) {
			delete(k.holders, o)
		}
	}
	if len(k.holders) == 0 && len(k.queue) == 0 {
		k.limit = req.Share.Limit
	}
	return k
}

func (k *mkey) wakeHead() {
	if len(k.queue) > 0 {
		select {
		case k.subs[k.queue[0]] <- struct{}{}:
		default:
		}
	}
}

func (b *mtable) Try(_ context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.key(req)
	if k.limit != req.Share.Limit && b.mode != "nolimitcheck" {
		return lock.Grant{}, &lock.LimitError{Key: req.Key, Have: k.limit, Want: req.Share.Limit}
	}
	limit, weight := req.Share.Limit, req.Share.Weight
	switch {
	case b.mode == "overadmit":
		limit++
	case b.mode == "onepermit" && limit < lock.RWPermits:
		limit = 1
	case b.mode == "writeroverlap":
		weight = 1
	}
	used := 0
	var first time.Time
	for _, h := range k.holders {
		used += h.weight
		if first.IsZero() || h.expires.Before(first) {
			first = h.expires
		}
	}
	i := slices.Index(k.queue, req.Owner)
	turn := i == 0 || i < 0 && len(k.queue) == 0 || b.mode == "readerpref" && weight == 1
	if !turn || used+weight > limit {
		return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: first}
	}
	if i >= 0 {
		k.queue = slices.Delete(k.queue, i, i+1)
	}
	h := mholder{weight: weight}
	if req.TTL > 0 && b.mode != "noexpiry" {
		h.expires = time.Now().Add(req.TTL)
	}
	k.holders[req.Owner] = h
	if b.mode != "staletoken" || weight != 1 {
		b.tok++
	}
	k.wakeHead()
	return lock.Grant{Token: b.tok}, nil
}

func (b *mtable) Refresh(_ context.Context, req lock.Request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.key(req)
	h, ok := k.holders[req.Owner]
	if !ok {
		return lock.ErrNotHeld
	}
	h.expires = time.Now().Add(req.TTL)
	k.holders[req.Owner] = h
	return nil
}

func (b *mtable) Release(_ context.Context, req lock.Request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.key(req)
	if _, ok := k.holders[req.Owner]; !ok {
		return lock.ErrNotHeld
	}
	delete(k.holders, req.Owner)
	k.wakeHead()
	return nil
}

// Subscribe queues the waiter, as the network backends do.
func (b *mtable) Subscribe(_ context.Context, req lock.Request) (lock.Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.key(req)
	c := make(chan struct{}, 1)
	k.queue = append(k.queue, req.Owner)
	k.subs[req.Owner] = c
	return &msub{b: b, req: req, c: c}, nil
}

type msub struct {
	b   *mtable
	req lock.Request
	c   chan struct{}
}

func (s *msub) C() <-chan struct{} { return s.c }

func (s *msub) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	k := s.b.keys[s.req.Key]
	if i := slices.Index(k.queue, s.req.Owner); i >= 0 {
		k.queue = slices.Delete(k.queue, i, i+1)
	}
	delete(k.subs, s.req.Owner)
	k.wakeHead()
}

var (
	mtablesMu sync.Mutex
	mtables   = map[string]*mtable{}
)

func multiConfig(mode string) locktest.MultiConfig {
	get := func() *mtable {
		mtablesMu.Lock()
		defer mtablesMu.Unlock()
		b := mtables[mode]
		if b == nil {
			b = &mtable{mode: mode, keys: map[string]*mkey{}}
			mtables[mode] = b
		}
		return b
	}
	return locktest.MultiConfig{
		TTL: 200 * time.Millisecond,
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return lock.NewSemaphore(get(), opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return lock.NewRWLocker(get(), opts)
		},
	}
}

// TestMultiReference runs both suites against the correct mtable backend.
func TestMultiReference(t *testing.T) {
	t.Run("Semaphore", func(t *testing.T) { locktest.RunSemaphore(t, multiConfig("")) })
	t.Run("RWLock", func(t *testing.T) { locktest.RunRWLock(t, multiConfig("")) })
}

// TestMultiBroken is run in a child process by TestMultiSuitesHaveTeeth.
func TestMultiBroken(t *testing.T) {
	mode := os.Getenv("LOCKTEST_MULTI_BROKEN_MODE")
	if mode == "" {
		t.Skip("run by TestMultiSuitesHaveTeeth")
	}
	if os.Getenv("LOCKTEST_MULTI_SUITE") == "rw" {
		locktest.RunRWLock(t, multiConfig(mode))
	} else {
		locktest.RunSemaphore(t, multiConfig(mode))
	}
}

// TestMultiSuitesHaveTeeth runs the suites against broken backends, each
// in a child process, and checks that the tests aimed at the bug fail.
func TestMultiSuitesHaveTeeth(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		suite, mode string
		failing     []string
	}{
		{"sem", "overadmit", []string{"AllPermits", "AtMostLimit"}},
		{"sem", "onepermit", []string{"AllPermits"}},
		{"sem", "nolimitcheck", []string{"LimitMismatch"}},
		{"sem", "staletoken", []string{"TokensIncrease"}},
		{"sem", "noexpiry", []string{"Expiry"}},
		{"sem", "perprocess", []string{"MultiProcess", "KilledHolder"}},
		{"rw", "writeroverlap", []string{"WriterExcludes", "NoWriterWithAnyone"}},
		{"rw", "readerpref", []string{"WriterNotStarved"}},
		{"rw", "staletoken", []string{"WriterTokenGreatest"}},
		{"rw", "perprocess", []string{"MultiProcess"}},
	} {
		t.Run(c.suite+"/"+c.mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestMultiBroken$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "LOCKTEST_MULTI_BROKEN_MODE="+c.mode, "LOCKTEST_MULTI_SUITE="+c.suite)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a backend with bug %q:\n%s", c.mode, out)
			}
			for _, name := range c.failing {
				if !strings.Contains(string(out), "--- FAIL: TestMultiBroken/"+name+" ") {
					t.Errorf("bug %q: subtest %s did not fail:\n%s", c.mode, name, out)
				}
			}
		})
	}
}
