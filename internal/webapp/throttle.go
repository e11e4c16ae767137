package webapp

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Sign-in backoff: after a few free failures, each further failed sign-in
// for an account, or from a client address, doubles the time that account
// or address must wait before the next attempt, up to throttleMax. A
// success clears the account's failures but not the address's, so an
// attacker cannot reset his address by signing in to his own account.
const (
	accountFreeFailures = 3
	addressFreeFailures = 10
	throttleBase        = time.Second
	throttleMax         = 15 * time.Minute
	// throttleForget is how long after its last failure a key is forgotten.
	throttleForget = time.Hour
	// throttleMaxKeys bounds the memory the throttle uses.
	throttleMaxKeys = 100_000
)

// signInThrottle counts failed sign-ins per key ("account:name",
// "address:ip") and says how long a key must wait. It is safe for
// concurrent use; the zero value is not: use newSignInThrottle. It lives in
// the process: several processes sharing a database each keep their own.
type signInThrottle struct {
	now func() time.Time

	mu   sync.Mutex
	keys map[string]*throttleEntry
}

type throttleEntry struct {
	failures int
	last     time.Time // the last failure
	until    time.Time // no attempt before this
}

func newSignInThrottle(now func() time.Time) *signInThrottle {
	return &signInThrottle{now: now, keys: map[string]*throttleEntry{}}
}

// wait returns how long the first of keys that is held back must still
// wait, or 0.
func (t *signInThrottle) wait(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var d time.Duration
	for _, k := range keys {
		if e, ok := t.keys[k]; ok && e.until.After(now) {
			d = max(d, e.until.Sub(now))
		}
	}
	return d
}

// failed records a failed sign-in for key, which may fail free times
// before it has to wait.
func (t *signInThrottle) failed(key string, free int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	e, ok := t.keys[key]
	if ok && now.Sub(e.last) > throttleForget {
		e.failures = 0
	}
	if !ok {
		t.prune(now)
		e = &throttleEntry{}
		t.keys[key] = e
	}
	e.failures++
	e.last = now
	if n := e.failures - free; n > 0 {
		d := throttleMax
		if n <= 20 {
			d = min(throttleBase<<(n-1), throttleMax)
		}
		e.until = now.Add(d)
	}
}

// succeeded forgets the failures of key.
func (t *signInThrottle) succeeded(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

// prune makes room for a new key: it drops forgotten keys and, if the
// table is still full, arbitrary ones. t.mu is held.
func (t *signInThrottle) prune(now time.Time) {
	if len(t.keys) < throttleMaxKeys {
		return
	}
	for k, e := range t.keys {
		if now.Sub(e.last) > throttleForget && !e.until.After(now) {
			delete(t.keys, k)
		}
	}
	for k := range t.keys {
		if len(t.keys) < throttleMaxKeys*3/4 {
			break
		}
		delete(t.keys, k)
	}
}

// signInKeys returns the throttle keys of a sign-in as name from r: the
// account (case-folded, so that case variants share it) and the client
// address, the connection's peer: behind a reverse proxy every client has
// the proxy's address, and only the per-account backoff tells them apart.
func signInKeys(r *http.Request, name string) (account, address string) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "account:" + strings.ToLower(name), "address:" + host
}
