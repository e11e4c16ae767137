package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/haita/haita/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		name, key, reason string
	}{
		{"empty", "", "empty"},
		{"too long", strings.Repeat("x", lock.MaxKeyLen+1), "longer than the limit"},
		{"bad utf8", "a\xc3", "UTF-8"},
		{"nul", "a\x00b", "NUL"},
		{"ok", "orders/42", ""},
		{"ok longest", strings.Repeat("x", lock.MaxKeyLen), ""},
		{"ok unicode", "排他/🔒", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := lock.ValidateKey(tc.key)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("ValidateKey = %v", err)
				}
				return
			}
			var ke *lock.KeyError
			if !errors.Is(err, lock.ErrInvalidKey) || !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("ValidateKey = %v, want a KeyError saying %q", err, tc.reason)
			}
		})
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "a", "a\x00", "\xff", strings.Repeat("k", 600), "排他"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := lock.ValidateKey(key)
		want := key != "" && len(key) <= lock.MaxKeyLen && utf8.ValidString(key) && !strings.Contains(key, "\x00")
		if (err == nil) != want {
			t.Fatalf("ValidateKey(%q) = %v", key, err)
		}
		if err != nil && !utf8.ValidString(err.Error()) && utf8.ValidString(key) {
			t.Fatalf("error message is not valid UTF-8: %q", err.Error())
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts  lock.Options
		field string
	}{
		{lock.Options{TTL: -1}, "TTL"},
		{lock.Options{WaitLimit: -1}, "WaitLimit"},
		{lock.Options{PollInterval: -1}, "PollInterval"},
		{lock.Options{Drift: -1}, "Drift"},
		{lock.Options{TTL: time.Second, Drift: time.Second}, "Drift"},
		{lock.Options{Holder: strings.Repeat("h", 300)}, "Holder"},
	} {
		err := tc.opts.Validate()
		if !errors.Is(err, lock.ErrInvalidOptions) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidOptions naming %s", tc.opts, err, tc.field)
		}
	}
	if err := (lock.Options{}).Validate(); err != nil {
		t.Errorf("zero Options: %v", err)
	}
}

func TestErrorsMatchOneSentinel(t *testing.T) {
	cause := errors.New("connection reset")
	ind := &lock.IndeterminateError{Op: "release", Key: "k", Err: cause}
	held := &lock.HeldError{Key: "k", Holder: "api-1", ExpiresAt: time.Unix(0, 0)}
	wrapped := fmt.Errorf("job: %w", held)
	for _, tc := range []struct {
		err  error
		want error
	}{
		{ind, lock.ErrIndeterminate},
		{held, lock.ErrNotAcquired},
		{wrapped, lock.ErrNotAcquired},
		{&lock.KeyError{Key: "", Reason: "empty"}, lock.ErrInvalidKey},
	} {
		for _, s := range []error{lock.ErrNotAcquired, lock.ErrWaitLimit, lock.ErrNotHeld, lock.ErrLost, lock.ErrReleased, lock.ErrIndeterminate, lock.ErrInvalidKey, lock.ErrInvalidOptions, lock.ErrClosed} {
			if got := errors.Is(tc.err, s); got != (s == tc.want) {
				t.Errorf("errors.Is(%v, %v) = %v", tc.err, s, got)
			}
		}
	}
	if !errors.Is(ind, cause) {
		t.Error("IndeterminateError does not unwrap to its cause")
	}
	if !strings.Contains(held.Error(), "api-1") {
		t.Errorf("HeldError message %q does not name the holder", held.Error())
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := lock.New(nil, lock.Options{}); !errors.Is(err, lock.ErrInvalidOptions) {
		t.Errorf("New(nil) = %v", err)
	}
}

func TestNewOwnerIsRandom(t *testing.T) {
	seen := map[lock.Owner]bool{}
	for range 10000 {
		o := lock.NewOwner()
		if seen[o] {
			t.Fatalf("owner %s repeated", o)
		}
		seen[o] = true
		if len(o.String()) != 32 {
			t.Fatalf("owner %q is not 32 hex digits", o)
		}
	}
}

// TestIndeterminateAcquireCleansUp checks that an acquire whose outcome
// the engine did not confirm is reported as indeterminate, and that the
// core released the possible grant before saying so.
func TestIndeterminateAcquireCleansUp(t *testing.T) {
	b := &flaky{}
	l, err := lock.New(b, lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = l.TryAcquire(t.Context(), "k")
	if !errors.Is(err, lock.ErrIndeterminate) || errors.Is(err, lock.ErrNotAcquired) {
		t.Fatalf("TryAcquire = %v, want ErrIndeterminate", err)
	}
	if b.released != 1 {
		t.Fatalf("the possible grant was released %d times, want 1", b.released)
	}
}

// flaky grants on the engine but loses the answer.
type flaky struct{ released int }

func (*flaky) Capabilities() lock.Capabilities { return lock.Capabilities{Name: "flaky"} }
func (*flaky) DefaultTTL() time.Duration       { return 0 }
func (*flaky) Close() error                    { return nil }
func (*flaky) Try(context.Context, lock.Request) (lock.Grant, error) {
	return lock.Grant{}, errors.New("i/o timeout after the command was sent")
}
func (*flaky) Refresh(context.Context, lock.Request) error { return nil }
func (f *flaky) Release(context.Context, lock.Request) error {
	f.released++
	return nil
}
