package racelab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// workerFuncs are the process workers, by name.
var workerFuncs = map[string]func(ctx context.Context, w *worker) error{
	"counter": counterWorker,
	"pause":   pauseWorker,
	"cap":     capWorker,
}

// worker is one worker process: its flags, its stats and its pipes.
type worker struct {
	fs     *flag.FlagSet
	spec   lockSpec
	ops    int
	window time.Duration
	id     int
	file   string
	db     string
	fence  bool
	key    string
	stats  stats
	in     *bufio.Reader
	out    io.Writer
}

// RunWorker is the entry point of a worker process ("haita race-worker NAME
// flags..."). It prints READY, waits for a line on stdin before it starts
// (so that all workers start together), runs, and prints its stats as one
// JSON line. It is meant to be called by the binary's main only.
func RunWorker(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("racelab: race-worker needs a worker name")
	}
	fn, ok := workerFuncs[args[0]]
	if !ok {
		return fmt.Errorf("racelab: unknown worker %q", args[0])
	}
	w := &worker{fs: flag.NewFlagSet("race-worker "+args[0], flag.ContinueOnError), in: bufio.NewReader(stdin), out: stdout}
	var redlock, etcd string
	w.fs.StringVar(&w.spec.Engine, "lock", "", "lock engine")
	w.fs.StringVar(&w.spec.Dir, "lockdir", "", "filelock directory")
	w.fs.StringVar(&w.spec.Postgres, "postgres", "", "PostgreSQL URL")
	w.fs.StringVar(&w.spec.MySQL, "mysql", "", "MySQL/MariaDB DSN")
	w.fs.StringVar(&w.spec.Redis, "redis", "", "Redis address")
	w.fs.StringVar(&redlock, "redlock", "", "Redlock addresses")
	w.fs.StringVar(&etcd, "etcd", "", "etcd endpoints")
	w.fs.DurationVar(&w.spec.TTL, "ttl", 0, "lease TTL")
	w.fs.DurationVar(&w.spec.WaitLimit, "waitlimit", 0, "wait limit")
	w.fs.IntVar(&w.ops, "ops", 1, "operations")
	w.fs.DurationVar(&w.window, "window", DefaultWindow, "race window")
	w.fs.IntVar(&w.id, "id", 0, "worker number")
	w.fs.StringVar(&w.file, "file", "", "shared file")
	w.fs.StringVar(&w.db, "db", "", "SQLite database file")
	w.fs.BoolVar(&w.fence, "fence", false, "write with a fencing token")
	w.fs.StringVar(&w.key, "key", "", "lock key")
	if err := w.fs.Parse(args[1:]); err != nil {
		return err
	}
	w.spec.Redlock = splitList(redlock)
	w.spec.Etcd = splitList(etcd)
	err := fn(ctx, w)
	ws := w.stats.export()
	if err != nil {
		ws.Error = err.Error()
	}
	b, _ := json.Marshal(ws)
	fmt.Fprintf(w.out, "STATS %s\n", b)
	return err
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// ready tells the parent the worker is set up and waits for its go.
func (w *worker) ready() error {
	fmt.Fprintln(w.out, "READY")
	line, err := w.in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("racelab: waiting for the start signal: %w", err)
	}
	if strings.TrimSpace(line) != "GO" {
		return fmt.Errorf("racelab: unexpected start signal %q", line)
	}
	return nil
}

// proc is a running worker process seen from the parent.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	stats workerStats
	done  chan error
}

// start starts one worker process running name with args.
func (rc *runCtx) start(ctx context.Context, name string, args []string) (*proc, error) {
	if rc.env.cfg.Worker == nil {
		return nil, errors.New("racelab: no way to start worker processes")
	}
	cmd := rc.env.cfg.Worker(ctx, append([]string{name}, args...))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("racelab: start worker: %w", err)
	}
	p := &proc{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			line := sc.Text()
			if s, ok := strings.CutPrefix(line, "STATS "); ok {
				_ = json.Unmarshal([]byte(s), &p.stats)
				continue
			}
			p.lines <- line
		}
		close(p.lines)
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("racelab: worker %s: %w: %s", name, err, strings.TrimSpace(cmd.Stderr.(*lockedWriter).String()))
		}
		p.done <- err
	}()
	return p, nil
}

// expect waits for the next line from the worker and checks its prefix.
func (p *proc) expect(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			err := <-p.done
			p.done <- err
			return "", fmt.Errorf("racelab: worker ended before %s: %v", prefix, err)
		}
		if !strings.HasPrefix(line, prefix) {
			return "", fmt.Errorf("racelab: worker said %q, want %s", line, prefix)
		}
		return line, nil
	case <-t.C:
		return "", fmt.Errorf("racelab: worker did not say %s within %v", prefix, timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (p *proc) send(line string) error {
	_, err := io.WriteString(p.stdin, line+"\n")
	return err
}

// wait waits for the process to end and returns its error.
func (p *proc) wait() error {
	for range p.lines {
	}
	err := <-p.done
	p.done <- err
	return err
}

// procs runs rc.workers processes of worker name together: each gets args
// plus --id; all start at once after every one said READY. Their stats are
// merged into rc's.
func (rc *runCtx) procs(ctx context.Context, name string, args []string) error {
	ps := make([]*proc, 0, rc.workers)
	kill := func() {
		for _, p := range ps {
			_ = p.cmd.Process.Kill()
			_ = p.wait()
		}
	}
	for i := range rc.workers {
		p, err := rc.start(ctx, name, append(args, fmt.Sprintf("--id=%d", i)))
		if err != nil {
			kill()
			return err
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, err := p.expect(ctx, "READY", 30*time.Second); err != nil {
			kill()
			return err
		}
	}
	for _, p := range ps {
		_ = p.send("GO")
	}
	var errs []error
	for _, p := range ps {
		if err := p.wait(); err != nil {
			errs = append(errs, err)
		}
		rc.stats.merge(p.stats)
	}
	return errors.Join(errs...)
}

// lockedWriter is a strings.Builder safe for the exec package's copier
// goroutine and a reader.
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}
