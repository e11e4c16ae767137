package racelab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// counterScenario is S4 (two threads read 17, both write 18) in memory and
// in a file shared by processes, with S18's in-process lock that does not
// protect across processes and S8's file lock that does.
func counterScenario() *Scenario {
	return &Scenario{
		ID: 1, Name: "counter", Title: "Lost update on a counter: 17 → 18, twice",
		Seeds: "S4 S8 S18", Unit: "lost updates", Workers: 8, Ops: 40,
		cases: func(e *env) []Case {
			cs := []Case{
				{Variant: "read-modify-write", Kind: Broken, Engine: Memory, run: memCounter(memRMW)},
				{Variant: "sync.Mutex", Kind: Fixed, Engine: Memory, run: memCounter(memMutex)},
				{Variant: "atomic.Add", Kind: Fixed, Engine: Memory, run: memCounter(memAtomic)},
				{Variant: "memlock", Kind: Fixed, Engine: Memlock, run: memCounter(memLocked)},
				// Processes sharing a file.
				{Variant: "file read-modify-write", Kind: Broken, Engine: File, Processes: true, Workers: 4, Ops: 30, run: fileCounter("")},
				{Variant: "in-process lock per process", Kind: Broken, Engine: Memlock, Processes: true, Workers: 4, Ops: 30, run: fileCounter(Memlock)},
			}
			for _, en := range []string{Filelock, Redis, Redlock, Postgres, MySQL, Etcd} {
				cs = append(cs, Case{Variant: lockBackendName(en) + " across processes", Kind: Fixed, Engine: en, Processes: true, Workers: 4, Ops: 30, run: fileCounter(en)})
			}
			return cs
		},
	}
}

type counterImpl int

const (
	memRMW counterImpl = iota
	memMutex
	memAtomic
	memLocked
)

// memCounter increments one in-memory counter from every worker. The broken
// variant loads and stores atomically (so the race detector has nothing to
// say) but not as one step: the window between is where updates are lost.
func memCounter(impl counterImpl) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		var n atomic.Int64
		n.Store(17)
		var mu sync.Mutex
		var l lock.Locker
		if impl == memLocked {
			ml, err := memlock.New(lock.Options{})
			if err != nil {
				return 0, "", err
			}
			defer ml.Close()
			l = ml
		}
		key := rc.key("counter")
		err := rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			switch impl {
			case memRMW:
				o.attempt()
				v := n.Load()
				rc.widen()
				n.Store(v + 1)
			case memMutex:
				mu.Lock()
				o.attempt()
				v := n.Load()
				rc.widen()
				n.Store(v + 1)
				mu.Unlock()
			case memAtomic:
				o.attempt()
				rc.widen() // the same work, outside the (one-instruction) critical section
				n.Add(1)
			case memLocked:
				le, err := l.Acquire(ctx, key)
				if err != nil {
					return err
				}
				o.attempt()
				v := n.Load()
				rc.widen()
				n.Store(v + 1)
				if err := le.Release(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		return counterVerdict(17, rc.stats.ops.Load(), n.Load(), err)
	}
}

func counterVerdict(start, ops, got int64, err error) (int64, string, error) {
	want := start + ops
	return want - got, fmt.Sprintf("started at %d, %d increments: want %d, got %d", start, ops, want, got), err
}

// fileCounter runs worker processes that increment a counter kept in a
// file, each under a lock of engine ("" for none).
func fileCounter(engine string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		path := filepath.Join(rc.env.dir, fmt.Sprintf("counter-%d", rc.index))
		if err := os.WriteFile(path, []byte(counterRecord(17)), 0o600); err != nil {
			return 0, "", err
		}
		args := []string{"--file", path, "--ops", strconv.Itoa(rc.ops), "--window", rc.window.String()}
		if engine != "" {
			s := rc.env.lockSpec(engine)
			args = append(args, s.args()...)
		}
		err := rc.procs(ctx, "counter", args)
		got, rerr := readCounter(path)
		if err == nil {
			err = rerr
		}
		return counterVerdict(17, rc.stats.ops.Load(), got, err)
	}
}

// counterRecord is the counter's fixed-width file content, rewritten in
// place so that a reader never sees a truncated file.
func counterRecord(n int64) string { return fmt.Sprintf("%20d\n", n) }

func readCounter(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// counterWorker is the process side of fileCounter.
func counterWorker(ctx context.Context, w *worker) error {
	var l lock.Locker
	if w.spec.Engine != "" {
		var closeFn func()
		var err error
		l, closeFn, err = openLocker(ctx, w.spec)
		if err != nil {
			return err
		}
		defer closeFn()
	}
	f, err := os.OpenFile(w.file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := w.ready(); err != nil {
		return err
	}
	buf := make([]byte, 21)
	for range w.ops {
		err := w.stats.do(func(o *op) error {
			var le *lock.Lease
			if l != nil {
				var err error
				if le, err = l.Acquire(ctx, "haita-race/counter/"+w.file); err != nil {
					return err
				}
			}
			o.attempt()
			if _, err := f.ReadAt(buf, 0); err != nil {
				return err
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(buf)), 10, 64)
			if err != nil {
				return err
			}
			time.Sleep(w.window)
			if _, err := f.WriteAt([]byte(counterRecord(n+1)), 0); err != nil {
				return err
			}
			if le != nil {
				return le.Release(ctx)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
