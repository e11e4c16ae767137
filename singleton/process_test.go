package singleton_test

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
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/singleton"
)

// Environment of a child process.
const (
	envRole  = "HAITA_SINGLETON_ROLE"
	envDir   = "HAITA_SINGLETON_DIR"
	envIndex = "HAITA_SINGLETON_INDEX"
	envStart = "HAITA_SINGLETON_START"
)

const (
	raceChildren = 4
	raceSlots    = 6
	leaseTTL     = time.Second
)

// TestProcessesFile, TestProcessesRedis and TestProcessesPostgres race
// several OS processes (this test binary, re-executed) for the same slots
// on one backend: every slot runs exactly once. Then a runner is killed
// with SIGKILL mid-run and the next runner takes its slot over once the
// lease is free (file: at once; Redis and PostgreSQL: after the TTL).
func TestProcessesFile(t *testing.T) {
	testProcesses(t, func(t *testing.T, dir string) (lock.Locker, *singleton.SQLMarkers) {
		l, err := filelock.New(filepath.Join(dir, "locks"), lock.Options{Holder: holderName()})
		if err != nil {
			t.Fatal(err)
		}
		mk, _ := newMarkers(t, "sqlite", sqliteDSN(dir))
		return l, mk
	})
}

func TestProcessesRedis(t *testing.T) {
	addr := testserver.Redis(t, testserver.RedisOptions{}).Addr()
	testProcesses(t, func(t *testing.T, dir string) (lock.Locker, *singleton.SQLMarkers) {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { c.Close() })
		l, err := redislock.New(c, lock.Options{TTL: leaseTTL, Holder: holderName()})
		if err != nil {
			t.Fatal(err)
		}
		mk, _ := newMarkers(t, "sqlite", sqliteDSN(dir))
		return l, mk
	})
}

func TestProcessesPostgres(t *testing.T) {
	dsn := testserver.Postgres(t)
	testProcesses(t, func(t *testing.T, dir string) (lock.Locker, *singleton.SQLMarkers) {
		pool, err := pgxpool.New(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if err := pglock.CreateTable(t.Context(), pool, pglock.DefaultTable); err != nil {
			t.Fatal(err)
		}
		l, err := pglock.New(pool, lock.Options{TTL: leaseTTL, Holder: holderName()})
		if err != nil {
			t.Fatal(err)
		}
		mk, _ := newMarkers(t, "pgx", dsn)
		return l, mk
	})
}

func holderName() string { return "pid " + strconv.Itoa(os.Getpid()) }

type setup func(t *testing.T, dir string) (lock.Locker, *singleton.SQLMarkers)

func testProcesses(t *testing.T, open setup) {
	if role := os.Getenv(envRole); role != "" {
		child(t, role, open)
		return
	}
	dir := t.TempDir()
	l, mk := open(t, dir) // creates the tables
	defer l.Close()
	logPath := filepath.Join(dir, "runs.log")

	// Race.
	start := strconv.FormatInt(time.Now().Add(500*time.Millisecond).UnixNano(), 10)
	var cmds []*exec.Cmd
	for i := range raceChildren {
		cmds = append(cmds, spawn(t, "race", dir, i, start))
	}
	for i, c := range cmds {
		wait(t, c, fmt.Sprintf("race child %d", i))
	}
	runs := readLog(t, logPath)
	for s := range raceSlots {
		slot := fmt.Sprintf("slot-%d", s)
		if n := len(runs["run "+slot]); n != 1 {
			t.Errorf("%s ran %d times (by %v), want exactly once", slot, n, runs["run "+slot])
		}
		rec, ok, err := mk.Get(t.Context(), "race", slot)
		if err != nil || !ok || rec.State != singleton.StateDone || rec.Attempts != 1 {
			t.Errorf("%s marker %+v, %v, %v", slot, rec, ok, err)
		}
	}

	// A runner killed mid-run; the next one takes the slot over.
	hang := spawn(t, "hang", dir, 0, "")
	deadline := time.Now().Add(30 * time.Second)
	for len(readLog(t, logPath)["start hang"]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("hanging child never started its run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := hang.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = hang.Wait()
	if rec, _, _ := mk.Get(t.Context(), "kill", "k"); rec.State != singleton.StateStarted {
		t.Fatalf("killed runner's marker %+v, want started", rec)
	}
	killed := time.Now()
	wait(t, spawn(t, "takeover", dir, 0, ""), "takeover child")
	runs = readLog(t, logPath)
	if n := len(runs["run takeover"]); n != 1 {
		t.Fatalf("takeover ran %d times", n)
	}
	rec, _, err := mk.Get(t.Context(), "kill", "k")
	if err != nil || rec.State != singleton.StateDone || rec.Attempts != 2 || rec.Holder != "pid "+runs["run takeover"][0] {
		t.Fatalf("marker after takeover %+v, %v (log %v)", rec, err, runs)
	}
	t.Logf("slot taken over %v after the kill", time.Since(killed).Round(time.Millisecond))
}

// child runs one role in a child process.
func child(t *testing.T, role string, open setup) {
	dir := os.Getenv(envDir)
	l, mk := open(t, dir)
	defer l.Close()
	logf := func(format string, args ...any) {
		f, err := os.OpenFile(filepath.Join(dir, "runs.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, format+" %d\n", append(args, os.Getpid())...); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	switch role {
	case "race":
		idx, _ := strconv.Atoi(os.Getenv(envIndex))
		mode := singleton.Skip
		if idx%2 == 1 {
			mode = singleton.Wait
		}
		r := newRunner(t, l, singleton.Options{Mode: mode, Markers: mk, Holder: holderName()})
		at, _ := strconv.ParseInt(os.Getenv(envStart), 10, 64)
		time.Sleep(time.Until(time.Unix(0, at)))
		for s := range raceSlots {
			slot := fmt.Sprintf("slot-%d", s)
			err := r.RunSlot(ctx, "race", slot, func(context.Context) error {
				logf("run %s", slot)
				time.Sleep(30 * time.Millisecond)
				return nil
			})
			if err != nil && !errors.Is(err, singleton.ErrRunning) && !errors.Is(err, singleton.ErrDone) {
				t.Fatal(err)
			}
		}
	case "hang":
		r := newRunner(t, l, singleton.Options{Markers: mk, Holder: holderName()})
		_ = r.RunSlot(ctx, "kill", "k", func(ctx context.Context) error {
			logf("start hang")
			<-ctx.Done()
			time.Sleep(time.Hour)
			return nil
		})
	case "takeover":
		r := newRunner(t, l, singleton.Options{Mode: singleton.Wait, Markers: mk, Holder: holderName()})
		if err := r.RunSlot(ctx, "kill", "k", func(context.Context) error {
			logf("run takeover")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown role %q", role)
	}
}

func spawn(t *testing.T, role, dir string, idx int, start string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), envRole+"="+role, envDir+"="+dir, envIndex+"="+strconv.Itoa(idx), envStart+"="+start)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	outputs[cmd] = out
	return cmd
}

var outputs = map[*exec.Cmd]*strings.Builder{}

func wait(t *testing.T, cmd *exec.Cmd, what string) {
	t.Helper()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, outputs[cmd])
	}
}

// readLog returns the run log as "what" -> pids.
func readLog(t *testing.T, path string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return m
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		m[line[:i]] = append(m[line[:i]], line[i+1:])
	}
	return m
}
