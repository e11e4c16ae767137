package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/haita/haita/internal/racelab"
	"github.com/haita/haita/internal/webapp"
)

const raceUsage = `Usage: haita race [flags]

The race lab: every race of haita's technique list (docs/techniques.md),
reproduced with a broken variant and fixed ones, on the embedded engines and
on the servers given by address, with the violations counted.

Exit status 3 when a case's outcome contradicts its kind (a broken variant
without violations, or a fixed one with), 1 when a case ended in an error.
`

func runRace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("race", flag.ContinueOnError)
	fs.Usage = usageFunc(fs, raceUsage)
	var (
		cfg                                 racelab.Config
		scenarios, variants, engines, sweep string
		redlockAddrs, etcdEndpoints         string
		jsonOut, list                       bool
		report                              string
	)
	fs.StringVar(&scenarios, "scenario", "", "scenarios to run, by number or name, comma-separated (default all)")
	fs.StringVar(&variants, "variant", "", "variants to run by name, or broken/fixed, comma-separated (default all)")
	fs.StringVar(&engines, "engine", "", "engines, comma-separated: memory,file,memlock,filelock,sqlite,postgres,mysql,redis,redlock,etcd (default: the embedded ones plus those with an address)")
	fs.IntVar(&cfg.Workers, "workers", 0, "workers per case (default: per scenario)")
	fs.IntVar(&cfg.Ops, "ops", 0, "operations per worker (default: per scenario)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop each case's workers after this long (default: run all ops)")
	fs.DurationVar(&cfg.Window, "window", 0, "race window: sleep between read and write (default "+racelab.DefaultWindow.String()+")")
	fs.StringVar(&sweep, "sweep", "1,2,4,8,16", "worker counts for the contention sweep of scenario 3's fixed variants, or none")
	fs.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/db")
	fs.StringVar(&cfg.MySQL, "mysql", "", "MySQL/MariaDB: a URL as haita serve takes it, e.g. mysql://root@127.0.0.1:3306/db, or a go-sql-driver DSN, e.g. root@tcp(127.0.0.1:3306)/db")
	fs.StringVar(&cfg.Redis, "redis", "", "Redis address host:port")
	fs.StringVar(&redlockAddrs, "redlock", "", "independent Redis masters for Redlock, comma-separated")
	fs.StringVar(&etcdEndpoints, "etcd", "", "etcd endpoints, comma-separated")
	fs.BoolVar(&jsonOut, "json", false, "print the results as a JSON array instead of the table")
	fs.StringVar(&report, "report", "", "write a self-contained HTML report to this file")
	fs.BoolVar(&list, "list", false, "list the cases that would run, and exit")
	if err := parseFlags(fs, args, 0, stdout); err != nil {
		return err
	}
	cfg.Scenarios = splitComma(scenarios)
	cfg.Variants = splitComma(variants)
	cfg.Engines = splitComma(engines)
	cfg.Redlock = splitComma(redlockAddrs)
	cfg.Etcd = splitComma(etcdEndpoints)
	if strings.HasPrefix(cfg.MySQL, "mysql://") {
		dsn, err := webapp.MySQLDSN(cfg.MySQL)
		if err != nil {
			return usageErrorf("race", "--mysql: %v", err)
		}
		cfg.MySQL = dsn
	}
	if sweep == "none" {
		sweep = ""
	}
	for _, s := range splitComma(sweep) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return usageErrorf("race", "invalid value %q for flag -sweep: want worker counts of at least 1, comma-separated, or none", sweep)
		}
		cfg.Sweep = append(cfg.Sweep, n)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Worker = func(ctx context.Context, args []string) *exec.Cmd {
		return exec.CommandContext(ctx, exe, append([]string{"race-worker"}, args...)...)
	}
	if err := cfg.Validate(); err != nil {
		return usageErrorf("race", "%v", err)
	}
	plan, err := racelab.Plan(cfg)
	if err != nil {
		return err
	}
	if len(plan) == 0 {
		return usageErrorf("race", "no case matches the -scenario, -variant and -engine given (-list shows the cases)")
	}
	if list {
		for _, c := range plan {
			fmt.Fprintf(stdout, "%s (%s, %d workers)\n", c, c.Kind, c.Workers)
		}
		return nil
	}
	window := cfg.Window
	if window == 0 {
		window = racelab.DefaultWindow
	}
	progressOut := stdout
	if jsonOut {
		progressOut = stderr
	}
	fmt.Fprintf(progressOut, "haita race: race windows widened on purpose — workers sleep %v between read and write, so broken variants violate on the first run.\n", window)
	prog := newProgress(progressOut)
	cfg.Progress = prog.event
	start := time.Now()
	results, err := racelab.Run(ctx, cfg)
	prog.done()
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout)
		if err := racelab.WriteTable(stdout, results); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d cases in %v.\n", len(results), time.Since(start).Round(100*time.Millisecond))
	}
	if report != "" {
		f, err := os.Create(report)
		if err != nil {
			return err
		}
		meta := racelab.ReportMeta{Command: "haita race " + strings.Join(args, " "), Started: start, Elapsed: time.Since(start)}
		if err := racelab.WriteHTML(f, results, meta); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(progressOut, "report written to %s\n", report)
	}
	return verdict(results)
}

// verdict returns the error for a run's results: nil when every case ran and
// came out as its kind says; an error (exit code 1) when a case ended in an
// error; else one matching errContradicted (exit code 3) when a broken variant
// had no violations or a fixed one had some.
func verdict(results []racelab.Result) error {
	var errored, contradicted int
	for _, r := range results {
		switch {
		case r.Error != "":
			errored++
		case r.Failed():
			contradicted++
		}
	}
	switch {
	case errored > 0:
		return fmt.Errorf("race: %d of %d cases ended in an error (see the table)", errored, len(results))
	case contradicted > 0:
		return fmt.Errorf("race: %w in %d of %d cases (see the table)", errContradicted, contradicted, len(results))
	}
	return nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// progress shows the run: a bar on a terminal (mpb), plain lines otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	p    *mpb.Progress
	bar  *mpb.Bar
	name atomic.Pointer[string] // the running case, read by the bar's goroutine
}

func newProgress(w io.Writer) *progress {
	pr := &progress{w: w}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		pr.tty = true
	}
	return pr
}

func (pr *progress) event(e racelab.Event) {
	if !pr.tty {
		if e.Result != nil {
			r := e.Result
			status := fmt.Sprintf("%d %s", r.Violations, r.ViolationUnit)
			if r.Error != "" {
				status += " (error: " + r.Error + ")"
			}
			fmt.Fprintf(pr.w, "[%d/%d] %s (%s, %d workers): %s\n", e.Index, e.Total, e.Case, e.Case.Kind, e.Case.Workers, status)
		}
		return
	}
	if pr.p == nil {
		pr.p = mpb.New(mpb.WithOutput(pr.w), mpb.WithWidth(40), mpb.WithRefreshRate(120*time.Millisecond))
		pr.bar = pr.p.AddBar(int64(e.Total),
			mpb.PrependDecorators(decor.Name("race lab", decor.WCSyncSpaceR), decor.CountersNoUnit("%d/%d", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace), decor.Any(func(decor.Statistics) string {
				if n := pr.name.Load(); n != nil {
					return " " + *n
				}
				return ""
			})),
		)
	}
	if e.Result == nil {
		n := e.Case.String()
		pr.name.Store(&n)
		return
	}
	r := e.Result
	mark := "✓"
	if r.Failed() {
		mark = "!"
	}
	pr.p.Write([]byte(fmt.Sprintf("%s %s: %d %s\n", mark, e.Case, r.Violations, r.ViolationUnit)))
	pr.bar.Increment()
}

func (pr *progress) done() {
	if pr.p != nil {
		pr.bar.Abort(false)
		pr.p.Wait()
	}
}
