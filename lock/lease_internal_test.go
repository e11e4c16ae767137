package lock

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCheckReadsTheClock stands for a process paused past its lease's
// deadline: on resume the timer that closes Done has not run yet. Done and
// Err still say "held"; Check reads the clock, reports the loss and ends the
// lease, so Done and Err follow.
func TestCheckReadsTheClock(t *testing.T) {
	l, err := New(granting{}, Options{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	le, err := l.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := le.Check(); err != nil {
		t.Fatalf("Check of a fresh lease = %v", err)
	}
	le.Done() // someone watches: the timer is armed
	le.mu.Lock()
	le.timer.Stop() // the pause: the deadline passes, the timer has not fired
	le.deadline = time.Now().Add(-time.Millisecond)
	le.mu.Unlock()
	if le.Err() != nil {
		t.Fatal("the timer ran")
	}
	if err := le.Check(); !errors.Is(err, ErrLost) {
		t.Fatalf("Check after the deadline = %v, want ErrLost", err)
	}
	select {
	case <-le.Done():
	default:
		t.Fatal("Done still open after Check found the deadline passed")
	}
	if err := le.Err(); !errors.Is(err, ErrLost) {
		t.Fatalf("Err after Check = %v, want ErrLost", err)
	}
}

// granting grants every attempt, with leases that expire.
type granting struct{}

func (granting) Capabilities() Capabilities { return Capabilities{Name: "granting", TTL: true} }
func (granting) DefaultTTL() time.Duration  { return time.Minute }
func (granting) Close() error               { return nil }
func (granting) Try(context.Context, Request) (Grant, error) {
	return Grant{Token: 1}, nil
}
func (granting) Refresh(context.Context, Request) error { return nil }
func (granting) Release(context.Context, Request) error { return nil }

// TestUnwatchedLeaseEnds: a lease that nobody watches (no Done, no
// auto-refresh, no metrics) has no timer, yet its end at the local deadline
// is seen by Err, and by a Done called afterwards.
func TestUnwatchedLeaseEnds(t *testing.T) {
	l, err := New(granting{}, Options{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, first := range []string{"Err", "Done"} {
		t.Run("first="+first, func(t *testing.T) {
			le, err := l.TryAcquire(t.Context(), "k-"+first)
			if err != nil {
				t.Fatal(err)
			}
			le.mu.Lock()
			if le.timer != nil {
				t.Error("an unwatched lease has a timer")
			}
			le.deadline = time.Now().Add(-time.Millisecond) // the deadline passed
			le.mu.Unlock()
			if first == "Done" {
				<-le.Done() // the timer armed now fires at once
			}
			if err := le.Err(); !errors.Is(err, ErrLost) {
				t.Fatalf("Err after the deadline = %v, want ErrLost", err)
			}
			select {
			case <-le.Done():
			default:
				t.Fatal("Done open after Err found the deadline passed")
			}
		})
	}
}
