package racelab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind tells a broken variant from a fixed one.
type Kind string

// The kinds of variant.
const (
	Broken Kind = "broken"
	Fixed  Kind = "fixed"
)

// Engine names. The embedded engines need no server: memory (plain
// goroutines with sync/atomic), file (a plain file shared by processes),
// memlock, filelock and sqlite (modernc.org/sqlite in a temporary directory).
// The others need an address in [Config].
const (
	Memory   = "memory"
	File     = "file"
	Memlock  = "memlock"
	Filelock = "filelock"
	SQLite   = "sqlite"
	Postgres = "postgres"
	MySQL    = "mysql"
	Redis    = "redis"
	Redlock  = "redlock"
	Etcd     = "etcd"
)

// EmbeddedEngines are the engines that run with no flags and no servers.
var EmbeddedEngines = []string{Memory, File, Memlock, Filelock, SQLite}

// Config selects and shapes a [Run]. The zero value runs every scenario on
// the embedded engines with each scenario's default workers and operations.
type Config struct {
	// Scenarios selects scenarios by number ("3") or name ("db-counter").
	// Empty: all.
	Scenarios []string
	// Variants selects variants by name, or "broken"/"fixed". Empty: all.
	Variants []string
	// Engines selects engines by name. Empty: the embedded engines plus
	// every engine whose address is set below.
	Engines []string
	// Workers overrides each scenario's default number of workers
	// (goroutines or processes). Zero: the scenario's default. Negative:
	// invalid.
	Workers int
	// Ops overrides each scenario's default number of operations per
	// worker. Zero: the scenario's default. Negative: invalid.
	Ops int
	// Duration, when positive, stops every worker of a case after this
	// long even if it has operations left. Zero: no limit. Negative:
	// invalid.
	Duration time.Duration
	// Window is how long a worker sleeps between its read and its write,
	// widening the race window. Zero: [DefaultWindow]. Negative: invalid.
	Window time.Duration
	// Sweep lists worker counts for the contention sweep (scenario 3's
	// optimistic, pessimistic and atomic variants on the first database
	// engine). Empty: no sweep.
	Sweep []int
	// Postgres is a PostgreSQL URL (pgx); empty: no PostgreSQL.
	Postgres string
	// MySQL is a go-sql-driver/mysql DSN; empty: no MySQL/MariaDB.
	MySQL string
	// Redis is a Redis address host:port; empty: no Redis.
	Redis string
	// Redlock lists the addresses of independent Redis masters; empty: no
	// Redlock.
	Redlock []string
	// Etcd lists etcd client endpoints; empty: no etcd.
	Etcd []string
	// Dir is where temporary files go; empty: the system's temporary
	// directory. Run creates and removes its own directory below it.
	Dir string
	// Worker builds the command that runs [RunWorker] with args in a new
	// process (the haita binary re-executing itself). Nil: cases that need
	// processes are skipped.
	Worker func(ctx context.Context, args []string) *exec.Cmd
	// Progress, if set, is called (from one goroutine at a time) before and
	// after each case.
	Progress func(Event)
}

// DefaultWindow is the default widened race window.
const DefaultWindow = time.Millisecond

// Event reports progress of a [Run].
type Event struct {
	// Index and Total count cases (Index from 1).
	Index, Total int
	// Case is the case starting or finished.
	Case CaseInfo
	// Result is set when the case finished.
	Result *Result
}

// CaseInfo names one case: one variant of one scenario on one engine.
type CaseInfo struct {
	ScenarioID int
	Scenario   string
	Variant    string
	Kind       Kind
	Engine     string
	Processes  bool
	Sweep      bool
	Workers    int
}

func (c CaseInfo) String() string {
	return fmt.Sprintf("%d %s / %s on %s", c.ScenarioID, c.Scenario, c.Variant, c.Engine)
}

// Result is the outcome of one case. It is a plain value.
type Result struct {
	ScenarioID int    `json:"scenario_id"`
	Scenario   string `json:"scenario"`
	Title      string `json:"title"`
	Seeds      string `json:"seeds"`
	Variant    string `json:"variant"`
	Kind       Kind   `json:"kind"`
	Engine     string `json:"engine"`
	// Mode is "goroutines" or "processes".
	Mode    string `json:"mode"`
	Sweep   bool   `json:"sweep,omitempty"`
	Workers int    `json:"workers"`
	// Ops counts the operations that completed.
	Ops int64 `json:"ops"`
	// Violations counts breaches of the invariant; ViolationUnit says of what.
	Violations    int64   `json:"violations"`
	ViolationUnit string  `json:"violation_unit"`
	Detail        string  `json:"detail"`
	OpsPerSec     float64 `json:"ops_per_sec"`
	Retries       int64   `json:"retries"`
	WaitP50ms     float64 `json:"wait_p50_ms"`
	WaitP99ms     float64 `json:"wait_p99_ms"`
	WindowMs      float64 `json:"window_ms"`
	DurationMs    float64 `json:"duration_ms"`
	// Error is set when the case could not run to the end.
	Error string `json:"error,omitempty"`
}

// Failed reports whether the result contradicts its kind: a broken variant
// that did not violate, a fixed one that did, or a case that errored.
func (r Result) Failed() bool {
	return r.Error != "" || (r.Kind == Broken) == (r.Violations == 0)
}

// Scenario is one race of the technique list (docs/techniques.md) with its variants.
type Scenario struct {
	ID    int
	Name  string
	Title string
	// Seeds lists the ids of the techniques the scenario reproduces ("S4 S8 S18").
	Seeds string
	// Unit names what a violation is ("lost updates").
	Unit string
	// Workers and Ops are the defaults per case.
	Workers, Ops int
	// cases lists the scenario's cases on the environment's engines.
	cases func(e *env) []Case
}

// Case is one variant of a scenario on one engine.
type Case struct {
	Variant   string
	Kind      Kind
	Engine    string
	Processes bool
	// Workers and Ops override the scenario's defaults when non-zero.
	Workers, Ops int
	run          func(ctx context.Context, rc *runCtx) (violations int64, detail string, err error)
}

// Scenarios returns the lab's scenarios in order.
func Scenarios() []*Scenario {
	return []*Scenario{
		counterScenario(),
		memoryScenario(),
		dbCounterScenario(),
		createScenario(),
		stockScenario(),
		deadlockScenario(),
		editScenario(),
		cronScenario(),
		pauseScenario(),
		retryScenario(),
		leadersScenario(),
		capScenario(),
		readMostlyScenario(),
	}
}

// Validate reports an invalid Config.
func (c Config) Validate() error {
	switch {
	case c.Workers < 0, c.Ops < 0, c.Duration < 0, c.Window < 0:
		return errors.New("racelab: negative workers, ops, duration or window")
	}
	for _, n := range c.Sweep {
		if n < 1 {
			return fmt.Errorf("racelab: sweep worker count %d", n)
		}
	}
	if len(c.Redlock) == 1 {
		return errors.New("racelab: Redlock needs several addresses (three or five independent masters)")
	}
	known := append(slices.Clone(EmbeddedEngines), Postgres, MySQL, Redis, Redlock, Etcd)
	for _, e := range c.Engines {
		if !slices.Contains(known, e) {
			return fmt.Errorf("racelab: unknown engine %q (known: %s)", e, strings.Join(known, ", "))
		}
	}
	scs := Scenarios()
	for _, s := range c.Scenarios {
		if !slices.ContainsFunc(scs, func(sc *Scenario) bool { return sc.Name == s || strconv.Itoa(sc.ID) == s }) {
			return fmt.Errorf("racelab: unknown scenario %q", s)
		}
	}
	return nil
}

// engines returns the engines this config runs on.
func (c Config) engines() []string {
	if len(c.Engines) > 0 {
		return c.Engines
	}
	e := slices.Clone(EmbeddedEngines)
	if c.Postgres != "" {
		e = append(e, Postgres)
	}
	if c.MySQL != "" {
		e = append(e, MySQL)
	}
	if c.Redis != "" {
		e = append(e, Redis)
	}
	if len(c.Redlock) > 1 {
		e = append(e, Redlock)
	}
	if len(c.Etcd) > 0 {
		e = append(e, Etcd)
	}
	return e
}

func (c Config) window() time.Duration {
	if c.Window == 0 {
		return DefaultWindow
	}
	return c.Window
}

type plannedCase struct {
	sc *Scenario
	c  Case
	CaseInfo
	ops int
}

// Plan returns the cases a Run with this config would run, in order.
func Plan(cfg Config) ([]CaseInfo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &env{cfg: cfg}
	var out []CaseInfo
	for _, p := range plan(e) {
		out = append(out, p.CaseInfo)
	}
	return out, nil
}

func plan(e *env) []plannedCase {
	cfg := e.cfg
	engines := cfg.engines()
	var out []plannedCase
	for _, sc := range Scenarios() {
		if len(cfg.Scenarios) > 0 && !slices.Contains(cfg.Scenarios, sc.Name) && !slices.Contains(cfg.Scenarios, strconv.Itoa(sc.ID)) {
			continue
		}
		for _, c := range sc.cases(e) {
			if !slices.Contains(engines, c.Engine) {
				continue
			}
			if len(cfg.Variants) > 0 && !slices.Contains(cfg.Variants, c.Variant) && !slices.Contains(cfg.Variants, string(c.Kind)) {
				continue
			}
			if c.Processes && cfg.Worker == nil {
				continue
			}
			w := firstNonZero(cfg.Workers, c.Workers, sc.Workers)
			ops := firstNonZero(cfg.Ops, c.Ops, sc.Ops)
			out = append(out, plannedCase{sc: sc, c: c, ops: ops, CaseInfo: CaseInfo{
				ScenarioID: sc.ID, Scenario: sc.Name, Variant: c.Variant, Kind: c.Kind,
				Engine: c.Engine, Processes: c.Processes, Workers: w,
			}})
		}
	}
	// The contention sweep: scenario 3's fixed variants on one database.
	if len(cfg.Sweep) > 0 {
		sc := dbCounterScenario()
		db := ""
		for _, en := range []string{Postgres, MySQL, SQLite} {
			if slices.Contains(engines, en) {
				db = en
				break
			}
		}
		if db != "" {
			for _, c := range sc.cases(e) {
				if c.Engine != db || c.Kind != Fixed {
					continue
				}
				for _, w := range cfg.Sweep {
					ops := firstNonZero(cfg.Ops, sweepOps)
					out = append(out, plannedCase{sc: sc, c: c, ops: ops, CaseInfo: CaseInfo{
						ScenarioID: sc.ID, Scenario: sc.Name, Variant: c.Variant, Kind: c.Kind,
						Engine: c.Engine, Sweep: true, Workers: w,
					}})
				}
			}
		}
	}
	return out
}

// sweepOps is the operations per worker of a sweep point.
const sweepOps = 25

func firstNonZero(v ...int) int {
	for _, x := range v {
		if x != 0 {
			return x
		}
	}
	return 1
}

// Run runs the cases cfg selects and returns their results in order. A case
// that fails to run is reported in its Result's Error; Run itself returns an
// error only for an invalid config, a cancelled ctx, or a temporary
// directory it cannot create. Run is safe to call from several goroutines
// with separate configs.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "haita-race-")
	if err != nil {
		return nil, fmt.Errorf("racelab: %w", err)
	}
	e := &env{cfg: cfg, dir: dir}
	defer func() {
		e.close()
		os.RemoveAll(dir)
	}()
	cases := plan(e)
	results := make([]Result, 0, len(cases))
	for i, p := range cases {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		if cfg.Progress != nil {
			cfg.Progress(Event{Index: i + 1, Total: len(cases), Case: p.CaseInfo})
		}
		r := runCase(ctx, e, i, p)
		results = append(results, r)
		if cfg.Progress != nil {
			cfg.Progress(Event{Index: i + 1, Total: len(cases), Case: p.CaseInfo, Result: &r})
		}
	}
	return results, ctx.Err()
}

func runCase(ctx context.Context, e *env, i int, p plannedCase) Result {
	rc := &runCtx{
		env: e, index: i, engine: p.Engine, workers: p.Workers, ops: p.ops, window: e.cfg.window(),
		stats: &stats{},
	}
	if e.cfg.Duration > 0 {
		rc.deadline = time.Now().Add(e.cfg.Duration)
	}
	mode := "goroutines"
	if p.Processes {
		mode = "processes"
	}
	r := Result{
		ScenarioID: p.sc.ID, Scenario: p.sc.Name, Title: p.sc.Title, Seeds: p.sc.Seeds,
		Variant: p.c.Variant, Kind: p.c.Kind, Engine: p.c.Engine, Mode: mode, Sweep: p.Sweep,
		Workers: p.Workers, ViolationUnit: p.sc.Unit, WindowMs: ms(rc.window),
	}
	start := time.Now()
	v, detail, err := p.c.run(ctx, rc)
	el := time.Since(start)
	rc.closeAll()
	r.Violations, r.Detail = v, detail
	if err != nil {
		r.Error = err.Error()
	}
	r.Ops = rc.stats.ops.Load()
	r.Retries = rc.stats.retries.Load()
	r.DurationMs = ms(el)
	if el > 0 {
		r.OpsPerSec = float64(r.Ops) / el.Seconds()
	}
	r.WaitP50ms, r.WaitP99ms = rc.stats.percentiles()
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runCtx is what a case's run function gets: its shape, its stats and the
// environment's engines. Resources it opens are closed after the case.
type runCtx struct {
	env      *env
	index    int
	engine   string
	workers  int
	ops      int
	window   time.Duration
	deadline time.Time
	stats    *stats

	mu      sync.Mutex
	closers []func()
}

// engineOf returns the case's engine.
func (rc *runCtx) engineOf() string { return rc.engine }

// widen sleeps for the race window.
func (rc *runCtx) widen() { time.Sleep(rc.window) }

func (rc *runCtx) onClose(f func()) {
	rc.mu.Lock()
	rc.closers = append(rc.closers, f)
	rc.mu.Unlock()
}

func (rc *runCtx) closeAll() {
	rc.mu.Lock()
	cs := rc.closers
	rc.closers = nil
	rc.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// expired reports whether the case's duration limit has passed.
func (rc *runCtx) expired() bool {
	return !rc.deadline.IsZero() && time.Now().After(rc.deadline)
}

// loop runs rc.workers goroutines, each calling fn for up to rc.ops
// operations, and returns the first error. Each call is one operation in the
// stats when it returns nil.
func (rc *runCtx) loop(ctx context.Context, fn func(ctx context.Context, w, i int, o *op) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for w := range rc.workers {
		wg.Go(func() {
			for i := 0; i < rc.ops && !rc.expired(); i++ {
				if ctx.Err() != nil {
					return
				}
				if err := rc.stats.do(func(o *op) error { return fn(ctx, w, i, o) }); err != nil {
					cancel(fmt.Errorf("worker %d op %d: %w", w, i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}
