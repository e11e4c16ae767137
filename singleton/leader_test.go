package singleton_test

import (
	"context"
	"errors"
	"testing"

	"github.com/haita/haita/election"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/singleton"
)

var _ singleton.Leadership = (*election.Leadership)(nil)

// TestRunLeading runs a job under a leadership: it runs while leading, its
// context ends when the leader resigns, and once the leadership ended the
// job does not start.
func TestRunLeading(t *testing.T) {
	var l memlock.Locker
	e, err := election.New(&l, "scheduler", election.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := singleton.New(&l, singleton.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := e.Campaign(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	running := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- r.RunLeading(t.Context(), ld, "sweep", func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			return context.Cause(ctx)
		})
	}()
	<-running
	if err := ld.Resign(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, singleton.ErrNotLeading) || !errors.Is(err, lock.ErrReleased) {
		t.Errorf("RunLeading after the leader resigned = %v, want ErrNotLeading and lock.ErrReleased", err)
	}
	err = r.RunLeading(t.Context(), ld, "sweep", func(context.Context) error {
		t.Error("job ran after the leadership ended")
		return nil
	})
	if !errors.Is(err, singleton.ErrNotLeading) {
		t.Errorf("RunLeading with an ended leadership = %v, want ErrNotLeading", err)
	}
}
