package redlock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
)

// TestWaiterKilledInQueue kills a waiter process (SIGKILL) while it is
// first in the instances' queues of a key. The release names it, and
// nobody wakes; a waiter in this process, queued behind it, must still get
// the key once the dead waiter's place lapses (three of its polls), not be
// refused by the dead for ever.
func TestWaiterKilledInQueue(t *testing.T) {
	_, clients := instances(t, 3)
	const key = "killed"
	const poll = 200 * time.Millisecond
	if os.Getenv("HAITA_REDLOCK_CHILD") == "1" {
		l := newLocker(t, clients, lock.Options{PollInterval: poll})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if le, err := l.Acquire(ctx, key); err == nil {
				_ = le.Release(context.Background())
			}
		}()
		locktest.WaitUntilWaiting(t, l, key, 1)
		fmt.Println("queued")
		<-done
		return
	}
	ctx := t.Context()
	holder := newLocker(t, clients, lock.Options{TTL: time.Minute})
	le, err := holder.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), "HAITA_REDLOCK_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	queued := false
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if sc.Text() == "queued" {
			queued = true
			break
		}
	}
	if !queued {
		t.Fatal("waiter process did not queue")
	}
	w := newLocker(t, clients, lock.Options{PollInterval: poll})
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		le, err := w.Acquire(wctx, key)
		if err == nil {
			err = le.Release(context.WithoutCancel(ctx))
		}
		got <- err
	}()
	locktest.WaitUntilWaiting(t, w, key, 1)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := le.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the live waiter: %v", err)
	}
}
