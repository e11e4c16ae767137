//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// unescape reverses escape; it fails on anything escape cannot produce.
func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		if c != '%' || i+2 >= len(s) {
			return "", fmt.Errorf("bad byte %q at %d", c, i)
		}
		h := s[i+1 : i+3]
		if strings.ToLower(h) != h {
			return "", fmt.Errorf("uppercase escape %q", h)
		}
		v, err := strconv.ParseUint(h, 16, 8)
		if err != nil {
			return "", err
		}
		if plain(byte(v)) {
			return "", fmt.Errorf("escaped plain byte %q", byte(v))
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

func checkName(t *testing.T, key, name string) {
	t.Helper()
	if len(name) > 255 || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, "/\x00") || !strings.HasSuffix(name, ".lock") {
		t.Fatalf("FileName(%q) = %q: unsafe", key, name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !plain(c) && c != '%' {
			t.Fatalf("FileName(%q) = %q: byte %q outside [a-z0-9._%%-]", key, name, c)
		}
	}
	switch {
	case strings.HasPrefix(name, "k-"):
		got, err := unescape(strings.TrimSuffix(strings.TrimPrefix(name, "k-"), ".lock"))
		if err != nil || got != key {
			t.Fatalf("FileName(%q) = %q decodes to %q, %v", key, name, got, err)
		}
	case strings.HasPrefix(name, "h-"):
		if len(key)*3 <= maxEscaped {
			t.Fatalf("FileName(%q) = %q: hashed although short", key, name)
		}
	default:
		t.Fatalf("FileName(%q) = %q: unknown form", key, name)
	}
}

func TestFileName(t *testing.T) {
	long := strings.Repeat("ä", 200)
	tests := []struct{ key, want string }{
		{"orders/42", "k-orders%2f42.lock"},
		{"Orders/42", "k-%4frders%2f42.lock"},
		{"..", "k-...lock"},
		{"../../etc/passwd", "k-..%2f..%2fetc%2fpasswd.lock"},
		{"%2f", "k-%252f.lock"},
		{"a b", "k-a%20b.lock"},
		{strings.Repeat("x", 200), "k-" + strings.Repeat("x", 200) + ".lock"},
		{strings.Repeat("x", 201), ""},
		{long, ""},
	}
	for _, tt := range tests {
		name, err := FileName(tt.key)
		if err != nil {
			t.Fatalf("FileName(%q): %v", tt.key, err)
		}
		checkName(t, tt.key, name)
		if tt.want != "" && name != tt.want {
			t.Errorf("FileName(%q) = %q, want %q", tt.key, name, tt.want)
		}
		if tt.want == "" && !strings.HasPrefix(name, "h-") {
			t.Errorf("FileName(%.20q…) = %q, want the hashed form", tt.key, name)
		}
	}
	if n, _ := FileName(strings.Repeat("x", 201)); !strings.HasPrefix(n, "h-"+strings.Repeat("x", 64)+"-") {
		t.Errorf("hashed name %q lacks the readable prefix", n)
	}
	for _, bad := range []string{"", "a\x00b", "\xff", strings.Repeat("x", lock.MaxKeyLen+1)} {
		if _, err := FileName(bad); !errors.Is(err, lock.ErrInvalidKey) {
			t.Errorf("FileName(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
}

func FuzzFileName(f *testing.F) {
	for _, s := range []string{"a", "A", "..", "a/b", "%41", "ü", strings.Repeat("/", 70), strings.Repeat("z", 300)} {
		f.Add(s, s+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, erra := FileName(a)
		nb, errb := FileName(b)
		if (erra == nil) != (lock.ValidateKey(a) == nil) || (errb == nil) != (lock.ValidateKey(b) == nil) {
			t.Fatalf("FileName and ValidateKey disagree on %q / %q", a, b)
		}
		if erra != nil || errb != nil {
			return
		}
		checkName(t, a, na)
		checkName(t, b, nb)
		if (a == b) != (na == nb) {
			t.Fatalf("keys %q and %q: names %q and %q", a, b, na, nb)
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	r := record{token: 1<<counterBits | 7, boot: "a8ece10f46bb4530a0be89be92312542", pid: 812, holder: "api \"3\" ü"}
	long := record{token: 1, holder: strings.Repeat("h", 256)}.marshal(0)
	b := r.marshal(len(long))
	if len(b) != len(long) {
		t.Errorf("padded record is %d bytes, want %d", len(b), len(long))
	}
	got, err := parseRecord(b)
	if err != nil || got != r {
		t.Fatalf("parseRecord(%q) = %+v, %v; want %+v", b, got, err, r)
	}
	for i := range b[:len(b)-1] {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		if _, err := parseRecord(c); err == nil && c[i] != ' ' && b[i] != ' ' {
			t.Errorf("flipping byte %d (%q) went unnoticed", i, b[i])
		}
	}
}

func TestNext(t *testing.T) {
	const boot = "b1"
	tests := []struct {
		name     string
		prev     record
		boot     string
		dirEpoch uint64
		want     uint64
		wantSync bool
		wantBump bool
	}{
		{"first ever", record{}, boot, 1, 1<<counterBits | 1, false, false},
		{"same boot", record{token: 1<<counterBits | 5, boot: boot}, boot, 1, 1<<counterBits | 6, false, false},
		{"same boot, newer directory epoch", record{token: 1<<counterBits | 5, boot: boot}, boot, 3, 1<<counterBits | 6, false, false},
		{"after reboot", record{token: 1<<counterBits | 5, boot: "b0"}, boot, 2, 2<<counterBits | 1, false, false},
		{"after reboot, directory epoch not above", record{token: 2<<counterBits | 5, boot: "b0"}, boot, 2, 0, false, true},
		{"counter exhausted", record{token: 3<<counterBits | counterMask, boot: boot}, boot, 3, 0, false, true},
		{"counter exhausted, directory epoch raised", record{token: 3<<counterBits | counterMask, boot: boot}, boot, 4, 4<<counterBits | 1, false, false},
		{"no boot id", record{token: 1<<counterBits | 5}, "", 0, 1<<counterBits | 6, true, false},
		{"no boot id, first ever", record{}, "", 0, 1, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sync, bump, err := next(tt.prev, tt.boot, tt.dirEpoch)
			if err != nil || got != tt.want || sync != tt.wantSync || bump != tt.wantBump {
				t.Errorf("next = %d (epoch %d), sync %v, bump %v, %v; want %d (epoch %d), sync %v, bump %v",
					got, got>>counterBits, sync, bump, err, tt.want, tt.want>>counterBits, tt.wantSync, tt.wantBump)
			}
		})
	}
	if _, _, _, err := next(record{token: maxEpoch<<counterBits | counterMask}, "", 0); err == nil {
		t.Error("next past the last epoch did not fail")
	}
}

// TestTokensAcrossBoots simulates reboots by changing the boot id: every new
// boot starts a higher epoch, so tokens keep increasing even if the counter
// written without fsync had been lost.
func TestTokensAcrossBoots(t *testing.T) {
	dir := t.TempDir()
	var last lock.Token
	for i, boot := range []string{"boot1", "boot1", "boot2", "boot2", "", "boot1"} {
		l, err := New(dir, lock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		l.b.boot = boot
		l.b.epoch.Store(0)
		if boot != "" {
			if err := l.b.raiseEpoch(0, false); err != nil {
				t.Fatal(err)
			}
		}
		le, err := l.Acquire(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= last {
			t.Errorf("step %d (boot %q): token %d after %d", i, boot, le.Token(), last)
		}
		last = le.Token()
		_ = le.Release(context.Background())
		l.Close()
	}
}

// TestCounterExhausted: a key whose counter ran out raises the directory's
// epoch and continues above it.
func TestCounterExhausted(t *testing.T) {
	l, err := New(t.TempDir(), lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	path, _ := l.Path("k")
	full := record{token: l.b.epoch.Load()<<counterBits | counterMask, boot: l.b.boot}.marshal(0)
	if err := os.WriteFile(path, full, 0o600); err != nil {
		t.Fatal(err)
	}
	le, err := l.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer le.Release(context.Background())
	if want := (l.b.epoch.Load())<<counterBits | 1; uint64(le.Token()) != want || l.b.epoch.Load() != 2 {
		t.Errorf("token %d (epoch %d), want %d (epoch 2)", le.Token(), le.Token()>>counterBits, want)
	}
}

// TestNoMemoryPerKey: after many distinct keys, and after waiters that gave
// up, the in-process table is empty and every file is closed.
func TestNoMemoryPerKey(t *testing.T) {
	l, err := New(t.TempDir(), lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 5000 {
		le, err := l.Acquire(t.Context(), fmt.Sprintf("key-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := le.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	held, err := l.Acquire(t.Context(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		if _, err := l.Acquire(ctx, "busy"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire on a held key = %v, want DeadlineExceeded", err)
		}
		cancel()
	}
	if err := held.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	l.b.mu.Lock()
	n := len(l.b.keys)
	l.b.mu.Unlock()
	if n != 0 {
		t.Errorf("%d keys left in the table, want 0", n)
	}
}
