package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/haita/haita/lock"
)

// TestDetachedReleasesAbandonedGrant: an attempt whose caller left finishes
// in the background, and the grant it then makes is released; a definite
// "held" is not.
func TestDetachedReleasesAbandonedGrant(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		release bool
	}{
		{"granted", nil, true},
		{"unknown", errors.New("connection reset"), true},
		{"held", &lock.HeldError{Key: "k"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d lock.Detached
			req := request("k")
			started, answer := make(chan struct{}), make(chan struct{})
			released := make(chan lock.Request, 1)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := d.Try(ctx, req, func(context.Context) (lock.Grant, error) {
					close(started)
					<-answer
					return lock.Grant{Token: 1}, tt.err
				}, func(r lock.Request) { released <- r })
				done <- err
			}()
			<-started
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Try after the caller left = %v, want context.Canceled", err)
			}
			close(answer)
			d.Close() // waits for the background attempt and its release
			select {
			case r := <-released:
				if !tt.release {
					t.Errorf("released %v after a definite held", r.Owner)
				} else if r.Owner != req.Owner {
					t.Errorf("released owner %v, want %v", r.Owner, req.Owner)
				}
			default:
				if tt.release {
					t.Error("the abandoned attempt's outcome was not released")
				}
			}
		})
	}
}

// TestDetachedTTLIsNotCallersDeadline: an attempt that gets no answer
// within the request's TTL reports ErrLost, not the caller's deadline.
func TestDetachedTTLIsNotCallersDeadline(t *testing.T) {
	var d lock.Detached
	defer d.Close()
	req := lock.Request{Key: "k", Owner: lock.NewOwner(), TTL: time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := d.Try(ctx, req, func(ctx context.Context) (lock.Grant, error) {
		<-ctx.Done()
		return lock.Grant{}, ctx.Err()
	}, func(lock.Request) { t.Error("released although the caller is still there") })
	if errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, lock.ErrLost) {
		t.Errorf("Try = %v, want ErrLost, not context.DeadlineExceeded", err)
	}
}
