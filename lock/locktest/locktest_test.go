package locktest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// table is a minimal in-process backend with deliberate bugs by mode, to
// prove the suite catches them. Mode "" is correct and must pass.
type table struct {
	mode string
	mu   sync.Mutex
	m    map[string]row
	tok  lock.Token
}

type row struct {
	owner   lock.Owner
	expires time.Time
}

func (b *table) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "table-" + b.mode, TTL: true, Fencing: true}
}
func (b *table) DefaultTTL() time.Duration { return 0 }
func (b *table) Close() error              { return nil }

func (b *table) Try(_ context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.m[req.Key]
	if ok && (r.expires.IsZero() || time.Now().Before(r.expires)) && b.mode != "noexclusion" {
		return lock.Grant{}, &lock.HeldError{Key: req.Key}
	}
	r = row{owner: req.Owner}
	if req.TTL > 0 {
		r.expires = time.Now().Add(req.TTL)
		if b.mode == "noexpiry" {
			r.expires = time.Now().Add(time.Hour)
		}
	}
	b.m[req.Key] = r
	if b.mode != "nofencing" {
		b.tok++
	}
	return lock.Grant{Token: b.tok + 1}, nil
}

func (b *table) Refresh(_ context.Context, req lock.Request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.m[req.Key]
	if !ok || r.owner != req.Owner || time.Now().After(r.expires) {
		return lock.ErrNotHeld
	}
	r.expires = time.Now().Add(req.TTL)
	b.m[req.Key] = r
	return nil
}

func (b *table) Release(_ context.Context, req lock.Request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.m[req.Key]
	if !ok || (r.owner != req.Owner && b.mode != "anyrelease") {
		return lock.ErrNotHeld
	}
	delete(b.m, req.Key)
	return nil
}

// shared keeps one table per mode so that Lockers made by Config.New
// contend with each other, as clients of one engine do.
var (
	sharedMu sync.Mutex
	shared   = map[string]*table{}
)

func config(mode string) locktest.Config {
	return locktest.Config{
		TTL: 300 * time.Millisecond,
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			sharedMu.Lock()
			b := shared[mode]
			if b == nil {
				b = &table{mode: mode, m: map[string]row{}}
				shared[mode] = b
			}
			sharedMu.Unlock()
			return lock.New(b, opts)
		},
	}
}

// TestReference runs the suite against the correct table backend.
func TestReference(t *testing.T) { locktest.Run(t, config("")) }

// TestBroken is run in a child process by TestSuiteHasTeeth.
func TestBroken(t *testing.T) {
	mode := os.Getenv("LOCKTEST_BROKEN_MODE")
	if mode == "" {
		t.Skip("run by TestSuiteHasTeeth")
	}
	locktest.Run(t, config(mode))
}

// TestSuiteHasTeeth runs the suite against broken backends, each in a child
// process, and checks that the test aimed at the bug fails.
func TestSuiteHasTeeth(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for mode, failing := range map[string][]string{
		"noexclusion": {"MutualExclusion", "TryAcquireHeld"},
		"nofencing":   {"MutualExclusion", "FencingIncreases"},
		"anyrelease":  {"OwnershipAfterExpiry"},
		"noexpiry":    {"Expiry", "OwnershipAfterExpiry"},
	} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestBroken$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "LOCKTEST_BROKEN_MODE="+mode)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a backend with bug %q:\n%s", mode, out)
			}
			for _, name := range failing {
				if !strings.Contains(string(out), "--- FAIL: TestBroken/"+name+" ") {
					t.Errorf("bug %q: subtest %s did not fail:\n%s", mode, name, out)
				}
			}
		})
	}
}
