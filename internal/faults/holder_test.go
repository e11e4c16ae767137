package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// Faults 1 and 2: a holder process paused past its TTL, and one killed.
// The holder is a worker process with the role "hold": it takes the key,
// reports its grant, and waits for a line on its standard input; then it
// reports what its lease says and tries to write with its token.

// grantReport is what the holder reports after its grant.
type grantReport struct {
	Token uint64 `json:"token"`
	// LocalLeft and ServerLeft are the lease's local deadline and the
	// engine's expiry as seen at the same moment (the local one read
	// first), in nanoseconds from that moment.
	LocalLeft  int64 `json:"local_left"`
	ServerLeft int64 `json:"server_left"`
	// ServerExpiry is a lower bound of the engine's expiry, wall-clock
	// Unix nanoseconds; zero without TTL.
	ServerExpiry int64 `json:"server_expiry"`
}

// resumeReport is what the holder reports after it was resumed.
type resumeReport struct {
	DoneClosed     bool   `json:"done_closed"`
	Lost           bool   `json:"lost"`
	DoneAt         int64  `json:"done_at"`
	PGErr          string `json:"pg_err"`
	PGStale        bool   `json:"pg_stale"`
	FileErr        string `json:"file_err"`
	FileStale      bool   `json:"file_stale"`
	ReleaseNotHeld bool   `json:"release_not_held"`
	ReleaseErr     string `json:"release_err"`
}

func writeJSON(t testing.TB, path string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// readJSON waits up to d for path to appear and decodes it into v.
func readJSON(t testing.TB, path string, d time.Duration, v any) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", filepath.Base(path), d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// holdRole is the holder worker.
func holdRole(t *testing.T, r *rig, key string) {
	l := r.locker(t, lock.Options{TTL: r.ttl})
	ctx := t.Context()
	le, err := l.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var doneAt time.Time
	doneSeen := make(chan struct{})
	go func() {
		<-le.Done()
		doneAt = time.Now()
		close(doneSeen)
	}()
	rep := grantReport{Token: uint64(le.Token())}
	if r.probe != nil {
		at := time.Now()
		rep.LocalLeft = int64(le.Expiry().Sub(at))
		left, held, err := r.probe(ctx, key, le.Owner())
		if err != nil || !held {
			t.Fatalf("probe right after the grant: held %v, %v", held, err)
		}
		rep.ServerLeft = int64(left)
		rep.ServerExpiry = at.Add(left).UnixNano()
	}
	writeJSON(t, filepath.Join(r.dir, "granted"), rep)

	// Paused or killed here.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')

	var res resumeReport
	select {
	case <-doneSeen:
		res.DoneClosed = true
		res.DoneAt = doneAt.UnixNano()
	case <-time.After(3 * time.Second):
	}
	res.Lost = errors.Is(le.Err(), lock.ErrLost)
	// A holder that checked its lease before the pause writes now.
	wctx := context.WithoutCancel(ctx)
	if err := pgWrite(wctx, r.db, key, le.Token(), -1); err != nil {
		res.PGErr = err.Error()
		res.PGStale = errors.Is(err, sqlcc.ErrStaleToken)
	}
	if err := newFileRegister(r.dir, key).Write(le.Token(), -1); err != nil {
		res.FileErr = err.Error()
		res.FileStale = errors.Is(err, errStaleFile)
	}
	if err := le.Release(wctx); err != nil {
		res.ReleaseErr = err.Error()
		res.ReleaseNotHeld = errors.Is(err, lock.ErrNotHeld)
	}
	writeJSON(t, filepath.Join(r.dir, "resumed"), res)
}

// startHolder starts the holder worker and waits for its grant.
func startHolder(t *testing.T, r *rig, key string) (*holderProc, grantReport) {
	t.Helper()
	cmd := workerCmd(t, r, "hold", key, 0)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &holderProc{pid: cmd.Process.Pid, stdin: stdin, out: out}
	h.exited = make(chan error, 1)
	go func() { h.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(h.pid, syscall.SIGKILL)
		<-h.exited
	})
	var g grantReport
	readJSON(t, filepath.Join(r.dir, "granted"), 30*time.Second, &g)
	return h, g
}

type holderProc struct {
	pid    int
	stdin  io.WriteCloser
	out    *lockedBuffer
	exited chan error
}

// wait waits for the holder to exit and fails t when it failed.
func (h *holderProc) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-h.exited:
		h.exited <- err
		if err != nil {
			t.Fatalf("holder: %v\n%s", err, h.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("holder did not exit\n%s", h.out.String())
	}
}

// pauseHolder is fault 1 on r.
func pauseHolder(t *testing.T, r *rig) {
	key := uniqueKey(t, "pause")
	if child() {
		holdRole(t, r, key)
		return
	}
	pgInit(t, r.db, key)
	h, g := startHolder(t, r, key)
	t.Logf("holder: token %d, local deadline in %v, engine expiry in %v", g.Token,
		time.Duration(g.LocalLeft), time.Duration(g.ServerLeft))
	if !strings.HasPrefix(r.name, "etcd") && g.LocalLeft >= g.ServerLeft {
		t.Errorf("local deadline %v not before the engine's expiry %v", time.Duration(g.LocalLeft), time.Duration(g.ServerLeft))
	}
	if err := syscall.Kill(h.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(h.pid, syscall.SIGCONT)
		}
	}()

	l := r.locker(t, lock.Options{TTL: 30 * time.Second, WaitLimit: r.ttl + 20*time.Second})
	le, err := l.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	defer le.Release(context.Background())
	if uint64(le.Token()) <= g.Token {
		t.Errorf("next holder's token %d not greater than the paused holder's %d", le.Token(), g.Token)
	}
	if got.UnixNano() < g.ServerExpiry {
		t.Errorf("next holder got the key %v before the paused holder's engine expiry", time.Unix(0, g.ServerExpiry).Sub(got))
	}
	if err := pgWrite(t.Context(), r.db, key, le.Token(), 100); err != nil {
		t.Fatalf("next holder's pg write: %v", err)
	}
	if err := newFileRegister(r.dir, key).Write(le.Token(), 100); err != nil {
		t.Fatalf("next holder's file write: %v", err)
	}

	if err := syscall.Kill(h.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	var res resumeReport
	readJSON(t, filepath.Join(r.dir, "resumed"), 30*time.Second, &res)
	h.wait(t)
	t.Logf("resumed holder: %+v", res)
	if !res.DoneClosed || !res.Lost {
		t.Errorf("paused holder's lease: Done closed %v, Err is ErrLost %v", res.DoneClosed, res.Lost)
	}
	if !res.PGStale {
		t.Errorf("paused holder's pg write not refused as stale: %q", res.PGErr)
	}
	if !res.FileStale {
		t.Errorf("paused holder's file write not refused as stale: %q", res.FileErr)
	}
	if !res.ReleaseNotHeld {
		t.Errorf("paused holder's Release: %q, want ErrNotHeld", res.ReleaseErr)
	}
	v, fence, err := pgRead(t.Context(), r.db, key)
	if err != nil || v != 100 || fence != int64(le.Token()) {
		t.Errorf("pg row: value %d fence %d (%v); want 100 with token %d", v, fence, err, le.Token())
	}
	if fv, ff, err := newFileRegister(r.dir, key).Read(); err != nil || fv != 100 || ff != uint64(le.Token()) {
		t.Errorf("file register: value %d fence %d (%v); want 100 with token %d", fv, ff, err, le.Token())
	}
	left, held, err := r.probe(t.Context(), key, le.Owner())
	if err != nil || !held {
		t.Errorf("next holder no longer holds the key after the paused holder's Release: %v", err)
	} else {
		t.Logf("next holder still holds the key, %v left", left)
	}
}

// killHolder is fault 2 on r.
func killHolder(t *testing.T, r *rig) {
	key := uniqueKey(t, "kill")
	if child() {
		holdRole(t, r, key)
		return
	}
	h, g := startHolder(t, r, key)
	if err := syscall.Kill(h.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-h.exited
	h.exited <- nil
	killed := time.Now()
	l := r.locker(t, lock.Options{TTL: 30 * time.Second, WaitLimit: r.ttl + 20*time.Second})
	le, err := l.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	defer le.Release(context.Background())
	t.Logf("%s: next holder got the key %v after the kill (token %d after %d)", r.name, got.Sub(killed).Round(time.Millisecond), le.Token(), g.Token)
	if uint64(le.Token()) <= g.Token {
		t.Errorf("next holder's token %d not greater than the killed holder's %d", le.Token(), g.Token)
	}
	if g.ServerExpiry != 0 && got.UnixNano() < g.ServerExpiry {
		t.Errorf("next holder got the key %v before the killed holder's engine expiry", time.Unix(0, g.ServerExpiry).Sub(got))
	}
}

// lockedBuffer collects a process's output. Safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestPauseHolderRedis(t *testing.T) {
	r, _ := redisRig(t, redisNoPersistence)
	pauseHolder(t, r)
}
func TestPauseHolderRedlock(t *testing.T)  { pauseHolder(t, redlockRig(t, 3)) }
func TestPauseHolderPostgres(t *testing.T) { pauseHolder(t, pgRig(t)) }
func TestPauseHolderEtcd(t *testing.T) {
	r, _, _ := etcdRig(t, 1)
	pauseHolder(t, r)
}
func TestPauseHolderFilelock(t *testing.T) {
	t.Skip("not applicable: a file lock has no TTL, so a paused holder keeps the key and nobody else can take it; the kernel frees it only when the process ends (TestKillHolderFilelock)")
}

func TestKillHolderFilelock(t *testing.T) { killHolder(t, fileRig(t)) }
func TestKillHolderRedis(t *testing.T) {
	r, _ := redisRig(t, redisNoPersistence)
	killHolder(t, r)
}
func TestKillHolderRedlock(t *testing.T)  { killHolder(t, redlockRig(t, 3)) }
func TestKillHolderPostgres(t *testing.T) { killHolder(t, pgRig(t)) }
func TestKillHolderEtcd(t *testing.T) {
	r, _, _ := etcdRig(t, 1)
	killHolder(t, r)
}
