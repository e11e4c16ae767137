package idempotency_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/idempotency"
)

// childEnv marks the child process of a two-process test.
const childEnv = "HAITA_IDEM_CHILD"

// childLease is the claim's lease in the two-process tests.
const childLease = time.Second

// runChild is the child's side: it claims key, prints "CHILD started
// <token>", waits for a line on stdin (ignoring its context, as a stubborn
// or stalled operation would), returns "first" and prints "CHILD result
// <lost|ok|error>".
func runChild(t *testing.T, r *idempotency.Runner, key string) {
	in := bufio.NewReader(os.Stdin)
	_, err := r.Do(context.Background(), key, "fp", func(ctx context.Context, c idempotency.Claim) ([]byte, error) {
		fmt.Printf("CHILD started %d\n", c.Token)
		_, _ = in.ReadString('\n')
		return []byte("first"), nil
	})
	switch {
	case errors.Is(err, idempotency.ErrLeaseLost):
		fmt.Println("CHILD result lost")
	case err == nil:
		fmt.Println("CHILD result ok")
	default:
		fmt.Printf("CHILD result error %v\n", err)
	}
}

// child is a running child process of the current (sub)test.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+strings.ReplaceAll(t.Name(), "/", "$/^")+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 100)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), "CHILD "); ok {
				c.lines <- line
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for range c.lines { // the reader ends at EOF
		}
	})
	return c
}

// expect waits for the child's next line and checks it.
func (c *child) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			t.Fatalf("child ended before saying %q", want)
		}
		if line != want {
			t.Fatalf("child said %q; want %q", line, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("child never said %q", want)
	}
}

// TestKilledFirstCaller: the first caller, in a child process, is SIGKILLed
// while its operation runs. Its claim blocks the key until the lease expires
// (never two executions at once), then the key runs again, with a greater
// token, and the outcome is stored.
func TestKilledFirstCaller(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{Lease: childLease, PollInterval: 10 * time.Millisecond})
		if os.Getenv(childEnv) == "1" {
			runChild(t, r, "kill-me")
			return
		}
		c := startChild(t)
		c.expect(t, "started 1")
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.cmd.Wait()
		_, err := r.Do(t.Context(), "kill-me", "fp", func(_ context.Context, c idempotency.Claim) ([]byte, error) {
			// Only once the dead caller's lease has expired, as a takeover.
			if c.Token != 2 {
				t.Errorf("ran with token %d; want 2", c.Token)
			}
			return []byte("second"), nil
		})
		if err != nil && !errors.Is(err, idempotency.ErrInFlight) {
			t.Fatalf("Do right after the kill: %v", err)
		}
		res, err := r.DoWait(t.Context(), "kill-me", "fp", func(_ context.Context, c idempotency.Claim) ([]byte, error) {
			return []byte("second"), nil
		})
		if err != nil || string(res.Value) != "second" || res.Token != 2 {
			t.Fatalf("after the lease: %+v, %v; want the value of a second execution with token 2", res, err)
		}
	})
}

// TestStaleExecutionFenced: the first caller's process is stopped (SIGSTOP)
// mid-flight; after its lease a second execution takes the key over and
// stores its outcome; then the first resumes and finishes. Its outcome must
// not overwrite the second's: it gets ErrLeaseLost.
func TestStaleExecutionFenced(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		r := newRunner(t, k.open(t), idempotency.Options{Lease: childLease, PollInterval: 10 * time.Millisecond})
		if os.Getenv(childEnv) == "1" {
			runChild(t, r, "pause-me")
			return
		}
		c := startChild(t)
		c.expect(t, "started 1")
		if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		res, err := r.DoWait(t.Context(), "pause-me", "fp", func(_ context.Context, cl idempotency.Claim) ([]byte, error) {
			return []byte("second"), nil
		})
		if err != nil || string(res.Value) != "second" || res.Token != 2 || res.Replayed {
			t.Fatalf("second execution: %+v, %v", res, err)
		}
		if err := c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
		c.expect(t, "result lost")
		res, err = r.Do(t.Context(), "pause-me", "fp", nil)
		if err != nil || !res.Replayed || string(res.Value) != "second" || res.Token != 2 {
			t.Fatalf("stored outcome: %+v, %v; want the second execution's", res, err)
		}
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	})
}
