package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
)

// Faults 1 and 2 for semaphores: both permits of a key are held by worker
// processes with a short TTL; one is SIGSTOPped past its TTL, the other
// SIGKILLed. The parent then takes both permits. The history of leases —
// each from its grant to the end of its validity as its holder sees it (the
// local deadline, or the release) — is checked against the semaphore model:
// at no moment more than semLimit valid leases. The paused holder, resumed,
// must find its lease lost, its fenced write refused and its Release
// answered with ErrNotHeld.

const (
	semLimit   = 2
	envSemRole = "HAITA_FAULTS_SEM_ROLE"
	semTTL     = time.Second
)

type semOpen func(t testing.TB, opts lock.Options) (*lock.Semaphore, error)

// semGrant is what a worker reports after its grant.
type semGrant struct {
	Pid      int    `json:"pid"`
	Token    uint64 `json:"token"`
	Granted  int64  `json:"granted"`  // Unix nanoseconds
	Deadline int64  `json:"deadline"` // the lease's local deadline, Unix nanoseconds
}

// semResumed is what the paused worker reports after it was resumed.
type semResumed struct {
	Lost       bool   `json:"lost"`
	WriteErr   string `json:"write_err"`
	Stale      bool   `json:"stale"`
	ReleaseErr string `json:"release_err"`
	NotHeld    bool   `json:"not_held"`
}

func TestSemaphorePauseKillRedis(t *testing.T) {
	s := testserver.Redis(t, testserver.RedisOptions{})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	semFaults(t, func(_ testing.TB, opts lock.Options) (*lock.Semaphore, error) {
		return redislock.NewSemaphore(c, opts, semLimit)
	})
}

func TestSemaphorePauseKillPostgres(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if os.Getenv(envSemRole) == "" {
		if err := pglock.CreateSemaphoreTables(t.Context(), pool, ""); err != nil {
			t.Fatal(err)
		}
	}
	semFaults(t, func(_ testing.TB, opts lock.Options) (*lock.Semaphore, error) {
		return pglock.NewSemaphore(pool, opts, semLimit)
	})
}

func semFaults(t *testing.T, open semOpen) {
	if os.Getenv(envSemRole) != "" {
		semHolder(t, open)
		return
	}
	dir := t.TempDir()
	key := uniqueKey(t, "sem")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	type proc struct {
		cmd   *exec.Cmd
		stdin *os.File
		g     semGrant
	}
	var procs []*proc
	for i := range semLimit {
		cmd := exec.CommandContext(t.Context(), exe, "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), envSemRole+"=hold", envDir+"="+dir, envKey+"="+key, envArg+"="+strconv.Itoa(i))
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = r
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		p := &proc{cmd: cmd, stdin: w}
		t.Cleanup(func() {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT)
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			w.Close()
		})
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if err := json.Unmarshal(sc.Bytes(), &p.g); err == nil && p.g.Token != 0 {
				break
			}
		}
		if p.g.Token == 0 {
			t.Fatalf("worker %d reported no grant", i)
		}
		go func() { _, _ = bufio.NewReader(out).WriteTo(os.Stdout) }()
		procs = append(procs, p)
	}
	paused, killed := procs[0], procs[1]
	if err := syscall.Kill(paused.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := killed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}

	s, err := open(t, lock.Options{TTL: 30 * time.Second, WaitLimit: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type interval struct {
		who        string
		start, end int64
		token      uint64
	}
	hist := []interval{
		{"paused worker", paused.g.Granted, paused.g.Deadline, paused.g.Token},
		{"killed worker", killed.g.Granted, killed.g.Deadline, killed.g.Token},
	}
	var leases []*lock.Lease
	for i := range semLimit {
		le, err := s.Acquire(t.Context(), key)
		if err != nil {
			t.Fatalf("permit %d after the pause and the kill: %v", i, err)
		}
		leases = append(leases, le)
		hist = append(hist, interval{fmt.Sprintf("parent %d", i), time.Now().UnixNano(), 1<<62 - 1, uint64(le.Token())})
	}
	reg := newFileRegister(dir, key)
	for _, le := range leases {
		if uint64(le.Token()) <= max(paused.g.Token, killed.g.Token) {
			t.Errorf("new permit's token %d not above the workers' %d and %d", le.Token(), paused.g.Token, killed.g.Token)
		}
		if err := reg.Write(le.Token(), 100); err != nil {
			t.Errorf("new holder's fenced write: %v", err)
		}
	}
	// The semaphore model: at every grant, the leases valid then number at
	// most semLimit.
	for _, a := range hist {
		n := 0
		for _, b := range hist {
			if b.start <= a.start && a.start < b.end {
				n++
			}
		}
		if n > semLimit {
			t.Errorf("at %s's grant %d leases were valid (limit %d): %+v", a.who, n, semLimit, hist)
		}
	}
	tokens := make([]uint64, len(hist))
	for i, h := range hist {
		tokens[i] = h.token
	}
	if len(slices.Compact(slices.Sorted(slices.Values(tokens)))) != len(tokens) {
		t.Errorf("tokens repeat: %v", tokens)
	}

	if err := syscall.Kill(paused.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := paused.stdin.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	var res semResumed
	readJSON(t, filepath.Join(dir, "resumed"), 30*time.Second, &res)
	t.Logf("resumed worker: %+v", res)
	if !res.Lost {
		t.Error("the paused worker's lease was not lost after its TTL")
	}
	if !res.Stale {
		t.Errorf("the paused worker's fenced write was not refused: %q", res.WriteErr)
	}
	if !res.NotHeld {
		t.Errorf("the paused worker's Release = %q, want ErrNotHeld", res.ReleaseErr)
	}
	if _, fence, err := reg.Read(); err != nil || fence != uint64(leases[len(leases)-1].Token()) {
		t.Errorf("register fence %d (%v), want the last new holder's %d", fence, err, leases[len(leases)-1].Token())
	}
	for _, le := range leases {
		if err := le.Release(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("Release: %v", err)
		}
	}
}

// semHolder is a worker: it takes a permit with the short TTL (no
// auto-refresh, so a pause past the TTL loses it), reports the grant,
// waits for a line on stdin and reports what its lease says then.
func semHolder(t *testing.T, open semOpen) {
	s, err := open(t, lock.Options{TTL: semTTL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key, dir := os.Getenv(envKey), os.Getenv(envDir)
	le, err := s.Acquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(semGrant{Pid: os.Getpid(), Token: uint64(le.Token()), Granted: time.Now().UnixNano(), Deadline: le.Expiry().UnixNano()})
	fmt.Println(string(b))
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	var res semResumed
	res.Lost = errors.Is(le.Check(), lock.ErrLost)
	if err := newFileRegister(dir, key).Write(le.Token(), 1); err != nil {
		res.WriteErr, res.Stale = err.Error(), errors.Is(err, errStaleFile)
	}
	if err := le.Release(context.WithoutCancel(t.Context())); err != nil {
		res.ReleaseErr, res.NotHeld = err.Error(), errors.Is(err, lock.ErrNotHeld)
	}
	writeJSON(t, filepath.Join(dir, "resumed"), res)
}
