package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output of haita")

// runHaita runs the test binary as haita (see TestMain) with args, and returns
// what it printed and its exit code.
func runHaita(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), asMain+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running haita %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// TestGolden runs haita's command lines for help, usage and mistakes, and
// compares what each prints on stdout and stderr, and its exit code, with
// testdata/<name>.golden. go test -run TestGolden -update rewrites the files.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		// haita itself
		{"no-command", nil},
		{"h", []string{"-h"}},
		{"help-flag", []string{"--help"}},
		{"help", []string{"help"}},
		{"unknown-command", []string{"frobnicate"}},
		{"unknown-flag", []string{"--nope"}},
		// help
		{"help-race", []string{"help", "race"}},
		{"help-serve", []string{"help", "serve"}},
		{"help-version", []string{"help", "version"}},
		{"help-help", []string{"help", "help"}},
		{"help-h", []string{"help", "-h"}},
		{"help-unknown", []string{"help", "frobnicate"}},
		{"help-hidden", []string{"help", "race-worker"}},
		{"help-two", []string{"help", "race", "serve"}},
		{"help-bad-flag", []string{"help", "--nope"}},
		// race
		{"race-h", []string{"race", "-h"}},
		{"race-help", []string{"race", "--help"}},
		{"race-bad-flag", []string{"race", "--nope"}},
		{"race-bad-value", []string{"race", "--workers", "many"}},
		{"race-bad-sweep", []string{"race", "--sweep", "0"}},
		{"race-unknown-engine", []string{"race", "--engine", "oracle"}},
		{"race-unknown-scenario", []string{"race", "--scenario", "99"}},
		{"race-no-case", []string{"race", "--engine", "memory", "--variant", "nonesuch"}},
		{"race-argument", []string{"race", "extra"}},
		{"race-list", []string{"race", "--list", "--engine", "memory,sqlite", "--scenario", "1,3", "--sweep", "none"}},
		// serve
		{"serve-h", []string{"serve", "-h"}},
		{"serve-help", []string{"serve", "--help"}},
		{"serve-bad-flag", []string{"serve", "--nope"}},
		{"serve-bad-value", []string{"serve", "--checkout-idle", "soon"}},
		{"serve-argument", []string{"serve", "extra"}},
		// version
		{"version-h", []string{"version", "-h"}},
		{"version-bad-flag", []string{"version", "--short"}},
		{"version-argument", []string{"version", "extra"}},
		// race-worker, the race lab's worker process
		{"race-worker-unknown", []string{"race-worker", "nonsense"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runHaita(t, tc.args...)
			got := formatRun(tc.args, stdout, stderr, code)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("haita %s: output differs from %s (go test -run TestGolden -update rewrites it)\n--- got\n%s--- want\n%s",
					strings.Join(tc.args, " "), path, got, want)
			}
		})
	}
}

// formatRun is the text of a golden file.
func formatRun(args []string, stdout, stderr string, code int) string {
	var b strings.Builder
	b.WriteString("$ haita " + strings.Join(args, " ") + "\n")
	b.WriteString("-- exit status --\n" + strconv.Itoa(code) + "\n")
	b.WriteString("-- stdout --\n" + stdout)
	b.WriteString("-- stderr --\n" + stderr)
	return b.String()
}

// TestExitCodes checks the exit codes whose runs print timings, which no
// golden file can hold: a race lab case whose outcome contradicts its kind
// (3), a case that cannot reach its server (1), and success (0).
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"ok", []string{"race", "--engine", "memory", "--scenario", "1", "--variant", "sync.Mutex", "--ops", "2", "--sweep", "none"},
			0, ""},
		// One worker cannot lose an update: the broken variant has no violations.
		{"contradicted", []string{"race", "--engine", "memory", "--scenario", "2", "--variant", "sync.Map load+store", "--workers", "1", "--ops", "1", "--sweep", "none"},
			3, "haita: race: an outcome contradicted its kind in 1 of 1 cases (see the table)\n"},
		{"cannot connect", []string{"race", "--engine", "postgres", "--postgres", "postgres://postgres@127.0.0.1:1/x", "--scenario", "3", "--variant", "atomic update", "--ops", "1", "--sweep", "none"},
			1, "haita: race: 1 of 1 cases ended in an error (see the table)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runHaita(t, tc.args...)
			if code != tc.code || stderr != tc.stderr {
				t.Errorf("haita %s: exit status %d, stderr %q; want %d, %q\nstdout:\n%s",
					strings.Join(tc.args, " "), code, stderr, tc.code, tc.stderr, stdout)
			}
		})
	}
}

// TestVersion checks "haita version" on the test binary, whose module version
// and revision depend on how it was built, by shape.
func TestVersion(t *testing.T) {
	stdout, stderr, code := runHaita(t, "version")
	re := regexp.MustCompile(`^haita \S+\nmodule github\.com/haita/haita\nrevision \S.*\n$`)
	if code != 0 || stderr != "" || !re.MatchString(stdout) {
		t.Errorf("haita version: exit status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestVersionText(t *testing.T) {
	mod := debug.Module{Path: "github.com/haita/haita", Version: "v0.3.0"}
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"no VCS", debug.BuildInfo{Main: debug.Module{Path: "github.com/haita/haita", Version: "(devel)"}},
			"haita (devel)\nmodule github.com/haita/haita\nrevision unknown: built without VCS information\n"},
		{"no version", debug.BuildInfo{},
			"haita (devel)\nrevision unknown: built without VCS information\n"},
		{"clean", debug.BuildInfo{Main: mod, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "false"}}},
			"haita v0.3.0\nmodule github.com/haita/haita\nrevision 0123abcd (committed 2026-01-02T03:04:05Z)\n"},
		{"modified", debug.BuildInfo{Main: mod, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}},
			"haita v0.3.0\nmodule github.com/haita/haita\nrevision 0123abcd (with uncommitted changes)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionText(&tc.bi); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
