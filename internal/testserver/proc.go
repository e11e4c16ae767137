package testserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// command describes a server process or a set-up command.
type command struct {
	path string
	args []string
	dir  string              // working directory
	log  string              // file that receives stdout and stderr, appended to
	cred *syscall.Credential // nil: run as this process's user
	env  []string            // nil: this process's environment
}

// cmd returns an exec.Cmd for c, writing to the log file f. The process gets its own process
// group, so that it and whatever it forks are signalled together, and dies with this process's
// thread that started it (in Go, with the process: the runtime does not end its threads unless a
// goroutine exits while locked to one).
func (c command) cmd(f *os.File) *exec.Cmd {
	cmd := exec.Command(c.path, c.args...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.Stdout = f // an *os.File is handed to the child directly: no copying goroutine
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: c.cred,
	}
	return cmd
}

func (c command) openLog() (*os.File, error) {
	f, err := os.OpenFile(c.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testserver: %w", err)
	}
	fmt.Fprintf(f, "=== testserver %s: %s %s\n", time.Now().Format(time.RFC3339Nano), c.path, strings.Join(c.args, " "))
	return f, nil
}

// run runs c to completion, killing its process group when ctx ends.
func (c command) run(ctx context.Context) error {
	f, err := c.openLog()
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := c.cmd(f)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testserver: %s: %w", c.path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("testserver: %s %s: %w\n%s", c.path, strings.Join(c.args, " "), err, logTail(c.log))
	}
	return nil
}

// proc is a running server process.
type proc struct {
	c    command
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // the exit status; set before done is closed
}

// start starts c in the background.
func (c command) start() (*proc, error) {
	f, err := c.openLog()
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := c.cmd(f)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testserver: %s: %w", c.path, err)
	}
	p := &proc{c: c, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the server process alone.
func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// signalGroup sends sig to the server and every process it started.
func (p *proc) signalGroup(sig syscall.Signal) {
	if p.running() {
		syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// waitExit reports whether the process exited within d.
func (p *proc) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// kill kills the process group with SIGKILL and waits for the server to be reaped.
func (p *proc) kill() {
	p.signalGroup(syscall.SIGKILL)
	<-p.done
}

// killTree is kill for a server whose children leave its process group, as PostgreSQL's
// backends do (each calls setsid): the server is stopped first so that it forks no more, its
// children are killed, then the server, and killTree waits until the children are dead.
func (p *proc) killTree() {
	if !p.running() {
		return
	}
	pid := p.cmd.Process.Pid
	p.signal(syscall.SIGSTOP)
	kids := children(pid)
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	p.kill()
	deadline := time.Now().Add(10 * time.Second)
	for _, k := range kids {
		for alive(k) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// children returns the pids of the processes whose parent is pid.
func children(pid int) []int {
	var kids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		k, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(k); ok && ppid == pid {
			kids = append(kids, k)
		}
	}
	return kids
}

// alive reports whether process pid exists and is not a zombie (a zombie holds no memory).
func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

// procStat returns the parent pid and state of process pid from /proc/pid/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}

// stop sends sig to the server and waits up to grace for it to exit, then kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.running() {
		return
	}
	p.signal(sig)
	if !p.waitExit(grace) {
		fmt.Fprintf(os.Stderr, "testserver: %s did not stop within %v of %v; killing it\n", p.c.path, grace, sig)
		p.kill()
	}
}

// exitError describes how the server exited, with the end of its log.
func (p *proc) exitError() error {
	return fmt.Errorf("%s: %w during start-up (%v)\n%s", p.c.path, errExited, p.err, logTail(p.c.log))
}

// waitReady polls check until it succeeds, the process exits or timeout passes.
func (p *proc) waitReady(timeout time.Duration, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	wait := 20 * time.Millisecond
	for {
		if !p.running() {
			return p.exitError()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.c.path, timeout, err, logTail(p.c.log))
		}
		if !p.waitExit(wait) {
			wait = min(2*wait, 250*time.Millisecond)
		}
	}
}

// errExited marks a start that failed because the server exited: worth retrying on other ports.
var errExited = errors.New("server exited")

// launch starts a server, with up to three tries, and waits until ready passes. newCommand is
// called before each try and may pick fresh ports. A try is repeated only when the server exits
// during start-up, which most often means another process took its port first.
func launch(newCommand func() (command, error), timeout time.Duration, ready func(ctx context.Context) error) (*proc, error) {
	var errs []error
	for try := 0; try < 3; try++ {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		c, err := newCommand()
		if err != nil {
			return nil, err
		}
		p, err := c.start()
		if err != nil {
			return nil, err
		}
		err = p.waitReady(timeout, ready)
		if err == nil {
			return p, nil
		}
		p.kill()
		errs = append(errs, err)
		if !errors.Is(err, errExited) {
			break
		}
	}
	return nil, fmt.Errorf("testserver: %w", errors.Join(errs...))
}

// logTail returns the end of a log file, for error messages.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 4 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "--- end of " + path + ":\n" + string(bytes.Join(lines, []byte("\n")))
}
