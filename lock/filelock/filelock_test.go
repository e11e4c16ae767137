package filelock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/locktest"
)

func TestMain(m *testing.M) { testserver.Main(m) }

const envDir = "HAITA_FILELOCK_TEST_DIR"

// TestConformance runs the shared suite. Child processes of the
// multi-process test inherit the directory through envDir.
func TestConformance(t *testing.T) {
	dir := os.Getenv(envDir)
	if dir == "" {
		dir = t.TempDir()
		t.Setenv(envDir, dir)
	}
	locktest.Run(t, locktest.Config{
		New: func(t testing.TB, opts lock.Options) (lock.Locker, error) {
			l, err := filelock.New(dir, opts)
			if err != nil {
				return nil, err // a typed nil *Locker must not become a non-nil interface
			}
			return l, nil
		},
	})
}

func newLocker(t testing.TB, dir string, opts lock.Options) *filelock.Locker {
	t.Helper()
	l, err := filelock.New(dir, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func release(t testing.TB, le *lock.Lease) {
	t.Helper()
	if err := le.Release(context.WithoutCancel(t.Context())); err != nil {
		t.Errorf("Release(%q): %v", le.Key(), err)
	}
}

func TestNewBadDirectory(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		opts lock.Options
	}{
		{"empty", "", lock.Options{}},
		{"regular file", file, lock.Options{}},
		{"below a regular file", filepath.Join(file, "locks"), lock.Options{}},
		{"TTL", tmp, lock.Options{TTL: time.Second}},
		{"negative poll", tmp, lock.Options{PollInterval: -1}},
	}
	if os.Geteuid() != 0 { // root may write anywhere
		ro := filepath.Join(tmp, "readonly")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			name string
			dir  string
			opts lock.Options
		}{"not writable", ro, lock.Options{}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := filelock.New(tt.dir, tt.opts)
			if !errors.Is(err, lock.ErrInvalidOptions) {
				if l != nil {
					l.Close()
				}
				t.Fatalf("New = %v, want ErrInvalidOptions", err)
			}
			t.Logf("%v", err)
		})
	}
}

func TestNewCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "locks")
	l := newLocker(t, dir, lock.Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode = %v, want 0700", fi.Mode().Perm())
	}
	le, err := l.Acquire(t.Context(), "Orders/42")
	if err != nil {
		t.Fatal(err)
	}
	defer release(t, le)
	path, err := l.Path("Orders/42")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "k-%4frders%2f42.lock"); path != want {
		t.Errorf("Path = %q, want %q", path, want)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode = %v, want 0600", fi.Mode().Perm())
	}
}

// TestGoroutineExclusion: 16 goroutines of one process, on one Locker,
// increment a non-atomic counter under the lock.
func TestGoroutineExclusion(t *testing.T) {
	l := newLocker(t, t.TempDir(), lock.Options{})
	var (
		inside  atomic.Int32
		count   int
		lastTok lock.Token
		wg      sync.WaitGroup
	)
	const workers, ops = 16, 100
	for range workers {
		wg.Go(func() {
			for range ops {
				le, err := l.Acquire(t.Context(), "hot")
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				if le.Token() <= lastTok {
					t.Errorf("token %d after %d", le.Token(), lastTok)
				}
				lastTok = le.Token()
				c := count
				time.Sleep(time.Microsecond)
				count = c + 1
				inside.Add(-1)
				release(t, le)
			}
		})
	}
	wg.Wait()
	if count != workers*ops {
		t.Errorf("count = %d, want %d", count, workers*ops)
	}
}

// TestTwoLockersOneProcess: two Lockers on one directory have separate
// in-process guards; flock on separate descriptors still excludes them.
func TestTwoLockersOneProcess(t *testing.T) {
	dir := t.TempDir()
	a := newLocker(t, dir, lock.Options{Holder: "locker-a"})
	b := newLocker(t, dir, lock.Options{PollInterval: 2 * time.Millisecond})
	le, err := a.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.TryAcquire(t.Context(), "k")
	var held *lock.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("TryAcquire on the other Locker = %v, want *lock.HeldError", err)
	}
	if held.Holder != "locker-a" {
		t.Errorf("Holder = %q, want the holder recorded in the file", held.Holder)
	}
	got := make(chan *lock.Lease)
	go func() {
		le, err := b.Acquire(t.Context(), "k")
		if err != nil {
			t.Error(err)
		}
		got <- le
	}()
	select {
	case <-got:
		t.Fatal("Acquire on the other Locker returned while the key was held")
	case <-time.After(50 * time.Millisecond):
	}
	tok := le.Token()
	release(t, le)
	le2 := <-got
	if le2 == nil {
		return
	}
	if le2.Token() <= tok {
		t.Errorf("token %d after %d", le2.Token(), tok)
	}
	release(t, le2)
}

// TestTokensPersist: a new Locker (as a restarted process would) continues
// the counter kept in the file.
func TestTokensPersist(t *testing.T) {
	dir := t.TempDir()
	var last lock.Token
	for i := range 3 {
		l := newLocker(t, dir, lock.Options{})
		le, err := l.Acquire(t.Context(), "k")
		if err != nil {
			t.Fatal(err)
		}
		if le.Token() <= last {
			t.Errorf("round %d: token %d after %d", i, le.Token(), last)
		}
		last = le.Token()
		release(t, le)
		l.Close()
	}
}

func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir, lock.Options{})
	path, _ := l.Path("k")
	if err := os.WriteFile(path, []byte("haita-filelock 1 token=99 boot=x pid=1 holder=\"\" crc=00000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := l.Acquire(t.Context(), "k")
	if err == nil || errors.Is(err, lock.ErrNotAcquired) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Acquire with a damaged lock file = %v, want an error naming %s", err, path)
	}
	t.Logf("%v", err)
	// The failed attempt left nothing held: a repaired file works.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	le, err := l.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatalf("TryAcquire after repair: %v", err)
	}
	release(t, le)
}

func TestReleaseAfterClose(t *testing.T) {
	l := newLocker(t, t.TempDir(), lock.Options{})
	le, err := l.Acquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	release(t, le)
	if _, err := l.TryAcquire(t.Context(), "k"); !errors.Is(err, lock.ErrClosed) {
		t.Errorf("TryAcquire after Close = %v, want ErrClosed", err)
	}
}

const (
	envHelperDir  = "HAITA_FILELOCK_HELPER_DIR"
	envHelperKeys = "HAITA_FILELOCK_HELPER_KEYS"
)

// TestHelperHolder is not a test: TestSIGKILL runs the test binary with it
// as a child process that takes keys, reports their tokens and waits to be
// killed.
func TestHelperHolder(t *testing.T) {
	dir := os.Getenv(envHelperDir)
	if dir == "" {
		t.Skip("helper process for TestSIGKILL")
	}
	l, err := filelock.New(dir, lock.Options{Holder: "child"})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for _, key := range strings.Split(os.Getenv(envHelperKeys), ",") {
		le, err := l.Acquire(context.Background(), key)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("held", key, uint64(le.Token()))
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed by the parent long before
	os.Exit(2)
}

// TestSIGKILL: a child process takes two keys and is killed with SIGKILL;
// the kernel frees its locks, so TryAcquire succeeds at once after the
// child is reaped and a waiting Acquire returns, both with greater tokens.
func TestSIGKILL(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperDir+"="+dir, envHelperKeys+"=try,wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	tokens := map[string]lock.Token{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "held" {
			n, _ := strconv.ParseUint(f[2], 10, 64)
			tokens[f[1]] = lock.Token(n)
		}
		if sc.Text() == "ready" {
			break
		}
		if f[0] == "error" {
			t.Fatalf("child: %s", sc.Text())
		}
	}
	if len(tokens) != 2 {
		t.Fatalf("child did not report its leases (got %v, scan error %v)", tokens, sc.Err())
	}

	l := newLocker(t, dir, lock.Options{PollInterval: 5 * time.Millisecond})
	_, err = l.TryAcquire(t.Context(), "try")
	var held *lock.HeldError
	if !errors.As(err, &held) || held.Holder != "child" {
		t.Fatalf("TryAcquire while the child holds the key = %v, want *lock.HeldError naming \"child\"", err)
	}
	waited := make(chan *lock.Lease, 1)
	go func() {
		le, err := l.Acquire(t.Context(), "wait")
		if err != nil {
			t.Error(err)
		}
		waited <- le
	}()

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL", err)
	}

	le, err := l.TryAcquire(t.Context(), "try")
	if err != nil {
		t.Fatalf("TryAcquire right after the holder was killed: %v", err)
	}
	if le.Token() <= tokens["try"] {
		t.Errorf("token %d not greater than the killed holder's %d", le.Token(), tokens["try"])
	}
	release(t, le)

	select {
	case le := <-waited:
		if le == nil {
			return
		}
		if le.Token() <= tokens["wait"] {
			t.Errorf("token %d not greater than the killed holder's %d", le.Token(), tokens["wait"])
		}
		release(t, le)
	case <-time.After(10 * time.Second):
		t.Fatal("waiting Acquire did not get the key of the killed holder")
	}
}
