package election_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/haita/haita/election"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// Child processes re-execute the test binary with these variables set.
const (
	envChild  = "HAITA_ELECTION_CHILD"  // the child's role
	envOut    = "HAITA_ELECTION_OUT"    // where a campaigning child writes its history
	envClient = "HAITA_ELECTION_CLIENT" // the child's client number
)

const (
	candidates = 3 // processes (goroutines on memlock)
	rounds     = 6 // terms each one leads
)

// hop is one operation of the election history: a Campaign (from call to
// grant) or a Resign, with wall-clock times shared by all processes of the
// machine.
type hop struct {
	Kind   string // "campaign" or "resign"
	Client int
	Call   int64
	Ret    int64
	Term   uint64
}

// termState is the election as the model sees it: the term that leads now
// (0: none) and the greatest term so far.
type termState struct{ leader, last uint64 }

// electionModel accepts a history when some order of its operations,
// consistent with real time, has at most one leader at a time and terms
// that strictly increase from one leader to the next.
var electionModel = porcupine.Model{
	Init: func() any { return termState{} },
	Step: func(state, input, _ any) (bool, any) {
		s, in := state.(termState), input.(hop)
		switch in.Kind {
		case "campaign":
			return s.leader == 0 && in.Term > s.last, termState{leader: in.Term, last: in.Term}
		default:
			return s.leader == in.Term, termState{last: s.last}
		}
	},
	DescribeOperation: func(input, _ any) string {
		in := input.(hop)
		return fmt.Sprintf("%s %d by %d", in.Kind, in.Term, in.Client)
	},
}

// lead campaigns and resigns rounds times, recording each operation.
func lead(ctx context.Context, e *election.Election, client int) ([]hop, error) {
	var hops []hop
	for range rounds {
		call := time.Now().UnixNano()
		ld, err := e.Campaign(ctx)
		if err != nil {
			return hops, err
		}
		hops = append(hops, hop{Kind: "campaign", Client: client, Call: call, Ret: time.Now().UnixNano(), Term: uint64(ld.Term())})
		if err := ld.Err(); err != nil {
			return hops, fmt.Errorf("leadership of term %d ended at once: %w", ld.Term(), err)
		}
		call = time.Now().UnixNano()
		if err := ld.Resign(ctx); err != nil {
			return hops, err
		}
		hops = append(hops, hop{Kind: "resign", Client: client, Call: call, Ret: time.Now().UnixNano(), Term: uint64(ld.Term())})
	}
	return hops, nil
}

// TestOneLeaderPerTerm runs candidates in separate OS processes (goroutines
// on memlock), each leading rounds terms, and checks the merged history
// with porcupine: at most one leader at a time, terms strictly increasing.
func TestOneLeaderPerTerm(t *testing.T) {
	forEach(t, nil, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		if os.Getenv(envChild) == "campaign" {
			client, _ := strconv.Atoi(os.Getenv(envClient))
			hops, err := lead(t.Context(), newElection(t, nl(t, fmt.Sprint("c", client)), name), client)
			if err != nil {
				t.Fatalf("child %d: %v", client, err)
			}
			b, _ := json.Marshal(hops)
			if err := os.WriteFile(os.Getenv(envOut), b, 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
		var all [][]hop
		if !eng.procs {
			all = make([][]hop, candidates)
			var wg sync.WaitGroup
			for i := range candidates {
				e := newElection(t, nl(t, fmt.Sprint("c", i)), name)
				wg.Go(func() {
					var err error
					if all[i], err = lead(t.Context(), e, i); err != nil {
						t.Errorf("candidate %d: %v", i, err)
					}
				})
			}
			wg.Wait()
		} else {
			all = runCandidates(t)
		}
		var ops []porcupine.Operation
		var n int
		for _, hops := range all {
			for _, h := range hops {
				ops = append(ops, porcupine.Operation{ClientId: h.Client, Input: h, Call: h.Call, Return: h.Ret})
			}
			n += len(hops)
		}
		if n != 2*candidates*rounds {
			t.Fatalf("history has %d operations, want %d", n, 2*candidates*rounds)
		}
		if res, info := porcupine.CheckOperationsVerbose(electionModel, ops, 30*time.Second); res != porcupine.Ok {
			path := filepath.Join(t.TempDir(), "history.html")
			_ = porcupine.VisualizePath(electionModel, info, path)
			t.Fatalf("history is %v: two leaders at once or a term that did not increase (%s)", res, path)
		}
	})
}

// runCandidates starts the campaigning children and returns their
// histories.
func runCandidates(t *testing.T) [][]hop {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := make([][]byte, candidates)
	errs := make([]error, candidates)
	var wg sync.WaitGroup
	for i := range candidates {
		cmd := exec.CommandContext(t.Context(), exe, "-test.run="+runPattern(t), "-test.count=1", "-test.timeout=2m")
		cmd.Env = append(os.Environ(), envChild+"=campaign", envClient+"="+strconv.Itoa(i),
			envOut+"="+filepath.Join(dir, fmt.Sprintf("hops-%d.json", i)))
		wg.Go(func() { out[i], errs[i] = cmd.CombinedOutput() })
	}
	wg.Wait()
	all := make([][]hop, candidates)
	for i := range candidates {
		if errs[i] != nil {
			t.Fatalf("child %d: %v\n%s", i, errs[i], out[i])
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("hops-%d.json", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &all[i]); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// runPattern selects the running subtest in a child.
func runPattern(t *testing.T) string {
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// store is a fenced row in PostgreSQL: what a leader writes to.
var store = sqlcc.Table{Name: "leader_work", Key: "id", Fence: "fence"}

func openStore(t testing.TB) *sql.DB {
	db, err := sql.Open("pgx", testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestPausedLeader stops a leading process with SIGSTOP past its TTL: another
// candidate leads with a greater term and writes with it; the stopped
// leader, resumed, finds its leadership ended (Done closed, context
// cancelled) and its write with the old term refused by the fence. It runs
// on the engines with a TTL and more than one process: a memlock election
// lives in one process, and a filelock leader keeps leading while stopped
// (flock has no TTL: the OS frees the lock only when the process dies).
func TestPausedLeader(t *testing.T) {
	forEach(t, func(e engine) bool { return e.ttl > 0 && e.procs }, func(t *testing.T, eng engine, nl newLocker) {
		name := "election/" + t.Name()
		db := openStore(t)
		if os.Getenv(envChild) == "pause" {
			pausedChild(t, newElection(t, nl(t, "paused"), name), db)
			return
		}
		if _, err := db.ExecContext(t.Context(), `CREATE TABLE leader_work (id int PRIMARY KEY, val text NOT NULL, fence bigint);
INSERT INTO leader_work VALUES (1, '', NULL)`); err != nil {
			t.Fatal(err)
		}
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), exe, "-test.run="+runPattern(t), "-test.count=1", "-test.timeout=2m", "-test.v")
		cmd.Env = append(os.Environ(), envChild+"=pause")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 100)
		var wg sync.WaitGroup
		var all strings.Builder
		wg.Go(func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				all.WriteString(sc.Text() + "\n")
				if s, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ELECTION "); ok {
					lines <- s
				}
			}
			close(lines)
		})
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			wg.Wait()
			_ = cmd.Wait()
		}()
		first, ok := <-lines
		oldTerm, err := strconv.ParseUint(strings.TrimPrefix(first, "leading "), 10, 64)
		if !ok || err != nil {
			wg.Wait()
			t.Fatalf("child did not report leading: %q\n%s", first, all.String())
		}
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		e := newElection(t, nl(t, "successor"), name)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		ld, err := e.Campaign(ctx)
		if err != nil {
			t.Fatalf("successor's Campaign while the leader is stopped: %v", err)
		}
		defer func() { _ = ld.Resign(context.WithoutCancel(t.Context())) }()
		if uint64(ld.Term()) <= oldTerm {
			t.Fatalf("successor's term %d is not greater than the stopped leader's %d", ld.Term(), oldTerm)
		}
		if err := sqlcc.FencedUpdate(t.Context(), db, store, 1, uint64(ld.Term()), sqlcc.Set("val", "successor")); err != nil {
			t.Fatalf("successor's fenced write: %v", err)
		}
		if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		var got []string
		for l := range lines {
			got = append(got, l)
		}
		wg.Wait()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v\n%s", err, all.String())
		}
		want := []string{"lost ctx-ended=true lost=true", "stale-write refused=true", "resign not-leader=true"}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("the resumed leader reported\n%s\nwant\n%s\nchild output:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), all.String())
		}
		var val string
		var fence uint64
		if err := db.QueryRowContext(t.Context(), `SELECT val, fence FROM leader_work WHERE id = 1`).Scan(&val, &fence); err != nil {
			t.Fatal(err)
		}
		if val != "successor" || fence != uint64(ld.Term()) {
			t.Errorf("row = %q fenced at %d, want the successor's write at %d", val, fence, ld.Term())
		}
		if l, err := e.Leader(t.Context()); err != nil || l.Term != ld.Term() || l.Value != "successor" {
			t.Errorf("Leader = %+v, %v; want the successor at term %d", l, err, ld.Term())
		}
	})
}

// pausedChild leads, writes with its term until its leadership ends (the
// parent stops it past its TTL meanwhile), then reports what it saw.
func pausedChild(t *testing.T, e *election.Election, db *sql.DB) {
	ld, err := e.Campaign(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := ld.Context(context.Background())
	defer cancel()
	term := uint64(ld.Term())
	fmt.Printf("ELECTION leading %d\n", term)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ld.Done():
			done = true
		case <-tick.C:
			// Writes while leading; after the successor wrote, a write
			// that slips in before Done is seen is refused by the fence.
			err := sqlcc.FencedUpdate(t.Context(), db, store, 1, term, sqlcc.Set("val", "paused"))
			if err != nil && !errors.Is(err, sqlcc.ErrStaleToken) {
				t.Errorf("write while leading: %v", err)
			}
		}
	}
	<-ctx.Done()
	fmt.Printf("ELECTION lost ctx-ended=%v lost=%v\n", ctx.Err() != nil, errors.Is(ld.Err(), lock.ErrLost))
	// A write that was on its way when the leadership ended.
	err = sqlcc.FencedUpdate(t.Context(), db, store, 1, term, sqlcc.Set("val", "paused"))
	fmt.Printf("ELECTION stale-write refused=%v\n", errors.Is(err, sqlcc.ErrStaleToken))
	err = ld.Resign(t.Context())
	fmt.Printf("ELECTION resign not-leader=%v\n", errors.Is(err, election.ErrNotLeader))
}
