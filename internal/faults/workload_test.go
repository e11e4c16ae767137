package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/sqlcc"
)

// workerCmd re-executes the test binary running t's top-level test as a
// worker with the given role.
func workerCmd(t *testing.T, r *rig, role, key string, idx int, extra ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), envRole+"="+role, envDir+"="+r.dir, envKey+"="+key,
		envArg+"="+strconv.Itoa(idx))
	cmd.Env = append(cmd.Env, extra...)
	return cmd
}

// workerIndex is this worker's number.
func workerIndex() int {
	i, _ := strconv.Atoi(os.Getenv(envArg))
	return i
}

// cycle is one workload iteration: acquire, read-modify-write both
// resources with the lease's token, release.
func cycle(ctx context.Context, l lock.Locker, r *rig, reg fileRegister, key string, client int, rec *recorder) error {
	c := now()
	le, err := l.Acquire(ctx, key)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	rec.add(op{Kind: "acquire", Client: client, Call: c, Ret: now(), Token: uint64(le.Token())})

	c = now()
	v, _, err := pgRead(ctx, r.db, key)
	if err != nil {
		return fmt.Errorf("pg read: %w", err)
	}
	rec.add(op{Kind: "read", Res: "pg", Client: client, Call: c, Ret: now(), Value: v})
	c = now()
	err = pgWrite(ctx, r.db, key, le.Token(), v+1)
	if err != nil && !errors.Is(err, sqlcc.ErrStaleToken) {
		return fmt.Errorf("pg write: %w", err)
	}
	rec.add(op{Kind: "write", Res: "pg", Client: client, Call: c, Ret: now(), Token: uint64(le.Token()), Value: v + 1, OK: err == nil})

	c = now()
	fv, _, err := reg.Read()
	if err != nil {
		return fmt.Errorf("file read: %w", err)
	}
	rec.add(op{Kind: "read", Res: "file", Client: client, Call: c, Ret: now(), Value: fv})
	c = now()
	err = reg.Write(le.Token(), fv+1)
	if err != nil && !errors.Is(err, errStaleFile) {
		return fmt.Errorf("file write: %w", err)
	}
	rec.add(op{Kind: "write", Res: "file", Client: client, Call: c, Ret: now(), Token: uint64(le.Token()), Value: fv + 1, OK: err == nil})

	c = now()
	if err := le.Release(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	rec.add(op{Kind: "release", Client: client, Call: c, Ret: now()})
	return nil
}

// workloadSize is the number of processes, goroutines per process and
// iterations per goroutine.
func workloadSize() (procs, goroutines, iters int) {
	return pick(3, 6), 2, pick(8, 40)
}

// runWorkers runs goroutines clients of the workload on one Locker,
// numbered from first.
func runWorkers(ctx context.Context, l lock.Locker, r *rig, key string, first, goroutines, iters int, rec *recorder) error {
	reg := newFileRegister(r.dir, key)
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range iters {
				if err := cycle(ctx, l, r, reg, key, first+g, rec); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// workload runs the multi-process workload on r and checks its history.
// In a worker it does the worker's share instead.
func workload(t *testing.T, r *rig) {
	key := uniqueKey(t, "workload")
	procs, goroutines, iters := workloadSize()
	opts := lock.Options{WaitLimit: 2 * time.Minute, Holder: fmt.Sprintf("pid %d", os.Getpid())}
	if child() {
		l := r.locker(t, opts)
		var rec recorder
		i := workerIndex()
		err := runWorkers(t.Context(), l, r, key, i*goroutines, goroutines, iters, &rec)
		if serr := rec.save(filepath.Join(r.dir, fmt.Sprintf("hist-%d.jsonl", i))); serr != nil {
			t.Fatal(serr)
		}
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		return
	}
	pgInit(t, r.db, key)
	start := time.Now()
	var wg sync.WaitGroup
	out := make([][]byte, procs)
	errs := make([]error, procs)
	for i := range procs {
		cmd := workerCmd(t, r, "workload", key, i)
		wg.Go(func() { out[i], errs[i] = cmd.CombinedOutput() })
	}
	wg.Wait()
	for i := range procs {
		if errs[i] != nil {
			t.Fatalf("worker %d: %v\n%s", i, errs[i], out[i])
		}
	}
	t.Logf("%s: %d processes × %d goroutines × %d iterations in %v", r.name, procs, goroutines, iters, time.Since(start).Round(time.Millisecond))
	checkWorkload(t, r, key, loadHistories(t, r.dir), procs*goroutines*iters)
}

// checkWorkload checks a workload's merged history: want grants, the
// mutex model, both fenced registers, and the plain invariants.
func checkWorkload(t *testing.T, r *rig, key string, ops []op, want int) {
	t.Helper()
	grants := 0
	for _, o := range ops {
		if o.Kind == "acquire" {
			grants++
		}
	}
	if grants != want {
		t.Errorf("%d grants recorded, want %d", grants, want)
	}
	checkLinearizable(t, r.name+" grants (mutex)", mutexModel, mutexHistory(ops))
	checkLinearizable(t, r.name+" pg row (fenced register)", registerModel, registerHistory(ops, "pg"))
	checkLinearizable(t, r.name+" file (fenced register)", registerModel, registerHistory(ops, "file"))
	final, _, err := pgRead(context.Background(), r.db, key)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r.name+" pg row", ops, "pg", final, nil)
	reg := newFileRegister(r.dir, key)
	fv, _, err := reg.Read()
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r.name+" file", ops, "file", fv, reg.acceptedTokens(t))
	if final != int64(want) || fv != int64(want) {
		t.Errorf("final values pg %d, file %d; want %d (every write under the lock accepted)", final, fv, want)
	}
	checkTokensIncrease(t, r.name, ops)
}

func TestWorkloadMemlock(t *testing.T) {
	r := base(t, "memlock")
	l, err := memlock.New(lock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	key := uniqueKey(t, "workload")
	pgInit(t, r.db, key)
	procs, goroutines, iters := workloadSize()
	var rec recorder
	if err := runWorkers(t.Context(), l, r, key, 0, procs*goroutines, iters, &rec); err != nil {
		t.Fatal(err)
	}
	checkWorkload(t, r, key, rec.ops, procs*goroutines*iters)
}

func TestWorkloadFilelock(t *testing.T) { workload(t, fileRig(t)) }

func TestWorkloadRedis(t *testing.T) {
	r, _ := redisRig(t, redisNoPersistence)
	workload(t, r)
}

func TestWorkloadRedlock(t *testing.T) { workload(t, redlockRig(t, pick(3, 5))) }

func TestWorkloadPostgres(t *testing.T) { workload(t, pgRig(t)) }

func TestWorkloadEtcd(t *testing.T) {
	r, _, _ := etcdRig(t, pick(1, 3))
	workload(t, r)
}
