package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/internal/webapp"
)

const envServeArgs = "HAITA_SERVE_CHILD_ARGS" // serve's arguments, separated by newlines

// TestServeChild is where a child process of TestServeLeaderTakeover runs
// haita serve; run directly, it skips.
func TestServeChild(t *testing.T) {
	args := os.Getenv(envServeArgs)
	if args == "" {
		t.Skip("runs only as a child of TestServeLeaderTakeover")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, strings.Split(args, "\n"), os.Stdout, os.Stderr); err != nil {
		t.Fatal(err)
	}
}

// instance is a haita serve process started by the test.
type instance struct {
	name string
	cmd  *exec.Cmd
	url  string
}

func startInstance(t *testing.T, name, dsn string) *instance {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--db", dsn, "--instance", name,
		"--leader-ttl", "1s", "--housekeeping-every", "50ms", "--seed=false"}
	cmd := exec.Command(exe, "-test.run=^TestServeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envServeArgs+"="+strings.Join(args, "\n"))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u := regexp.MustCompile(`http://\S+`).FindString(sc.Text()); u != "" && strings.HasPrefix(sc.Text(), "haita serve:") {
			in.url = u
		}
		if strings.Contains(sc.Text(), "press Ctrl-C") {
			go func() { // keep draining the pipe until the child ends
				for sc.Scan() {
				}
			}()
			return in
		}
	}
	t.Fatalf("instance %s ended before it served", name)
	return nil
}

func (in *instance) status(t *testing.T) (webapp.LeaderStatus, bool) {
	var st webapp.LeaderStatus
	req, _ := http.NewRequestWithContext(t.Context(), "GET", in.url+"/api/leader", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}

// waitFor polls in's /api/leader until ok accepts the answer.
func (in *instance) waitFor(t *testing.T, what string, ok func(webapp.LeaderStatus) bool) webapp.LeaderStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, answered := in.status(t)
		if answered && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 30s; last status %+v", in.name, what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeLeaderTakeover runs two haita serve processes on one PostgreSQL
// database: one leads the housekeeping and sweeps, the other knows it;
// killing the leader's process (SIGKILL) makes the other lead, with a
// greater term, and sweep.
func TestServeLeaderTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dsn := testserver.Postgres(t)
	a := startInstance(t, "a", dsn)
	b := startInstance(t, "b", dsn)
	insts := map[string]*instance{"a": a, "b": b}

	first := a.waitFor(t, "leader", func(st webapp.LeaderStatus) bool { return st.Leader != "" })
	leader := insts[first.Leader]
	other := a
	if leader == a {
		other = b
	}
	leader.waitFor(t, "sweeps by the leader", func(st webapp.LeaderStatus) bool {
		return st.Leading && st.Sweeps > 0 && st.Leader == leader.name
	})
	st := other.waitFor(t, "the same leader", func(st webapp.LeaderStatus) bool { return st.Leader == leader.name })
	if st.Leading || st.Sweeps != 0 {
		t.Fatalf("%s sweeps (%+v) while %s leads", other.name, st, leader.name)
	}

	if err := leader.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = leader.cmd.Wait()
	st = other.waitFor(t, "takeover", func(st webapp.LeaderStatus) bool {
		return st.Leading && st.Leader == other.name && st.Sweeps > 0
	})
	if st.Term <= first.Term {
		t.Errorf("the new leader's term %d is not greater than the killed leader's %d", st.Term, first.Term)
	}
	page, err := http.Get(other.url + "/leader")
	if err != nil {
		t.Fatal(err)
	}
	defer page.Body.Close()
	var sb strings.Builder
	_, _ = bufio.NewReader(page.Body).WriteTo(&sb)
	if want := fmt.Sprintf("%s, term %d", other.name, st.Term); !strings.Contains(sb.String(), want) {
		t.Errorf("the /leader page does not show %q:\n%s", want, sb.String())
	}
}
