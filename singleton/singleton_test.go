package singleton_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/robfig/cron/v3"
	_ "modernc.org/sqlite"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/singleton"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func sqliteDSN(dir string) string {
	return "file:" + filepath.Join(dir, "markers.db") + "?_txlock=immediate&_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)"
}

func newMarkers(t testing.TB, driver, dsn string) (*singleton.SQLMarkers, *sql.DB) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	mk, err := singleton.NewSQLMarkers(db, singleton.MarkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mk.CreateTable(t.Context()); err != nil {
		t.Fatal(err)
	}
	return mk, db
}

func newMem(t testing.TB, opts lock.Options) *memlock.Locker {
	l, err := memlock.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newRunner(t testing.TB, l lock.Locker, opts singleton.Options) *singleton.Runner {
	r, err := singleton.New(l, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestModes: in Skip mode a second runner is told who runs the job; in Wait
// mode it runs after the first.
func TestModes(t *testing.T) {
	// filelock reports the holder's name; memlock does not.
	l, err := filelock.New(t.TempDir(), lock.Options{Holder: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	skip := newRunner(t, l, singleton.Options{})
	wait := newRunner(t, l, singleton.Options{Mode: singleton.Wait})
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := skip.Run(t.Context(), "report", func(context.Context) error {
			close(started)
			<-release
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
	<-started
	var re *singleton.RunningError
	err = skip.Run(t.Context(), "report", func(context.Context) error { t.Error("overlapping run"); return nil })
	if !errors.As(err, &re) || re.Holder != "node-a" || !errors.Is(err, singleton.ErrRunning) {
		t.Fatalf("second runner: %v", err)
	}
	var ran atomic.Bool
	wg.Go(func() {
		if err := wait.Run(t.Context(), "report", func(context.Context) error { ran.Store(true); return nil }); err != nil {
			t.Error(err)
		}
	})
	time.Sleep(20 * time.Millisecond)
	if ran.Load() {
		t.Fatal("waiting runner ran while the first held the lease")
	}
	close(release)
	wg.Wait()
	if !ran.Load() {
		t.Fatal("waiting runner did not run")
	}
}

// TestSlots: a slot runs once across many runners, whichever mode; failures
// are recorded and final; markers tell attempts and states.
func TestSlots(t *testing.T) {
	mk, _ := newMarkers(t, "sqlite", sqliteDSN(t.TempDir()))
	l := newMem(t, lock.Options{})
	var runs atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		mode := singleton.Skip
		if i%2 == 1 {
			mode = singleton.Wait
		}
		r := newRunner(t, l, singleton.Options{Mode: mode, Markers: mk})
		wg.Go(func() {
			err := r.RunSlot(t.Context(), "nightly", "2026-03-01T01:00:00Z", func(context.Context) error {
				runs.Add(1)
				time.Sleep(5 * time.Millisecond)
				return nil
			})
			if err != nil && !errors.Is(err, singleton.ErrRunning) && !errors.Is(err, singleton.ErrDone) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("%d runs of one slot", runs.Load())
	}
	rec, ok, err := mk.Get(t.Context(), "nightly", "2026-03-01T01:00:00Z")
	if err != nil || !ok || rec.State != singleton.StateDone || rec.Attempts != 1 {
		t.Fatalf("marker %+v, %v, %v", rec, ok, err)
	}

	r := newRunner(t, l, singleton.Options{Markers: mk, Holder: "n1"})
	boom := errors.New("boom")
	if err := r.RunSlot(t.Context(), "nightly", "s2", func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing run: %v", err)
	}
	var de *singleton.DoneError
	err = r.RunSlot(t.Context(), "nightly", "s2", func(context.Context) error { t.Error("failed slot ran again"); return nil })
	if !errors.As(err, &de) || de.State != singleton.StateFailed || de.Err != "boom" || de.By != "n1" {
		t.Fatalf("after failure: %v", err)
	}
	if err := r.RunSlot(t.Context(), "nightly", "s3", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := newRunner(t, l, singleton.Options{}).RunSlot(t.Context(), "j", "s", nil); !errors.Is(err, singleton.ErrNoMarkers) {
		t.Fatalf("no markers: %v", err)
	}
}

// losing is a lock backend that grants every Try and refuses every
// Refresh: a lease that is lost at its first refresh.
type losing struct{ next atomic.Uint64 }

func (b *losing) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "losing", TTL: true, Fencing: true}
}
func (b *losing) DefaultTTL() time.Duration { return time.Second }
func (b *losing) Try(context.Context, lock.Request) (lock.Grant, error) {
	return lock.Grant{Token: lock.Token(b.next.Add(1))}, nil
}
func (b *losing) Refresh(context.Context, lock.Request) error { return lock.ErrNotHeld }
func (b *losing) Release(context.Context, lock.Request) error { return nil }
func (b *losing) Close() error                                { return nil }

// TestLeaseLost: fn's context is cancelled when the lease is lost, and the
// run reports it; its slot is not recorded done.
func TestLeaseLost(t *testing.T) {
	l, err := lock.New(&losing{}, lock.Options{TTL: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mk, _ := newMarkers(t, "sqlite", sqliteDSN(t.TempDir()))
	r := newRunner(t, l, singleton.Options{Markers: mk})
	var cause error
	err = r.RunSlot(t.Context(), "j", "s", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("not cancelled")
		}
	})
	if !errors.Is(cause, lock.ErrLost) || !errors.Is(err, lock.ErrLost) {
		t.Fatalf("cause %v, err %v", cause, err)
	}
	// The outcome is recorded as failed: this runner still held the claim.
	if rec, _, _ := mk.Get(t.Context(), "j", "s"); rec.State != singleton.StateFailed {
		t.Fatalf("marker %+v", rec)
	}
}

// TestRefresh: a lease with a short TTL on a Locker without AutoRefresh
// stays held through a run longer than the TTL.
func TestRefresh(t *testing.T) {
	// The TTL leaves a loaded machine room to schedule the refreshes
	// (every TTL/3); the run lasts three TTLs.
	l := newMem(t, lock.Options{TTL: 400 * time.Millisecond})
	r := newRunner(t, l, singleton.Options{})
	err := r.Run(t.Context(), "long", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(1200 * time.Millisecond):
			return nil
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGocron: two gocron schedulers ("nodes") with the Locker run a fast
// job once per slot, not once per node.
func TestGocron(t *testing.T) {
	mk, _ := newMarkers(t, "sqlite", sqliteDSN(t.TempDir()))
	l := newMem(t, lock.Options{})
	var runs atomic.Int32
	var scheds []gocron.Scheduler
	for range 2 {
		r := newRunner(t, l, singleton.Options{Markers: mk})
		s, err := gocron.NewScheduler(gocron.WithDistributedLocker(r.GocronLocker(singleton.GocronOptions{Every: time.Hour})))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.NewJob(gocron.OneTimeJob(gocron.OneTimeJobStartImmediately()), gocron.NewTask(func() {
			runs.Add(1)
			time.Sleep(10 * time.Millisecond)
		}), gocron.WithName("hourly")); err != nil {
			t.Fatal(err)
		}
		scheds = append(scheds, s)
	}
	for _, s := range scheds {
		s.Start()
	}
	time.Sleep(300 * time.Millisecond)
	for _, s := range scheds {
		if err := s.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
	if rec, _, _ := mk.Get(t.Context(), "hourly", singleton.Slot(time.Now(), time.Hour)); rec.State != singleton.StateDone {
		t.Fatalf("marker %+v", rec)
	}
}

// TestCronWrapper: the wrapper runs a robfig/cron job once per slot across
// two wrapped copies.
func TestCronWrapper(t *testing.T) {
	mk, _ := newMarkers(t, "sqlite", sqliteDSN(t.TempDir()))
	l := newMem(t, lock.Options{})
	var runs atomic.Int32
	var skipped atomic.Int32
	job := cron.FuncJob(func() { runs.Add(1) })
	for range 3 {
		r := newRunner(t, l, singleton.Options{Markers: mk, Mode: singleton.Wait})
		w := r.CronWrapper("digest", singleton.CronOptions{Every: time.Hour, OnError: func(err error) {
			if errors.Is(err, singleton.ErrDone) {
				skipped.Add(1)
			} else {
				t.Error(err)
			}
		}})
		cron.NewChain(w).Then(job).Run()
	}
	if runs.Load() != 1 || skipped.Load() != 2 {
		t.Fatalf("runs %d, skipped %d", runs.Load(), skipped.Load())
	}
}

func TestSlot(t *testing.T) {
	at := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{-29 * time.Second, -time.Second, 0, time.Second, 29 * time.Second} {
		if got := singleton.Slot(at.Add(skew), time.Minute); got != "2026-03-01T01:00:00Z" {
			t.Errorf("skew %v: slot %s", skew, got)
		}
	}
}

func TestOptions(t *testing.T) {
	if _, err := singleton.New(nil, singleton.Options{}); !errors.Is(err, singleton.ErrInvalid) {
		t.Fatal(err)
	}
	l := newMem(t, lock.Options{})
	if _, err := singleton.New(l, singleton.Options{Mode: 7}); !errors.Is(err, singleton.ErrInvalid) {
		t.Fatal(err)
	}
	r := newRunner(t, l, singleton.Options{})
	if err := r.Run(t.Context(), "", nil); !errors.Is(err, singleton.ErrInvalid) {
		t.Fatal(err)
	}
}

func TestMarkerOptions(t *testing.T) {
	db, err := sql.Open("sqlite", sqliteDSN(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, tc := range map[string]struct {
		db   *sql.DB
		opts singleton.MarkerOptions
	}{
		"nil db":          {nil, singleton.MarkerOptions{}},
		"bad table":       {db, singleton.MarkerOptions{Table: "bad name"}},
		"invalid dialect": {db, singleton.MarkerOptions{Dialect: 9}},
	} {
		t.Run(name, func(t *testing.T) {
			if mk, err := singleton.NewSQLMarkers(tc.db, tc.opts); !errors.Is(err, singleton.ErrInvalid) || mk != nil {
				t.Fatalf("NewSQLMarkers: %v, %v", mk, err)
			}
			if _, err := singleton.MarkerSchema(tc.opts.Dialect, tc.opts.Table); tc.db != nil && !errors.Is(err, singleton.ErrInvalid) {
				t.Fatalf("MarkerSchema: %v", err)
			}
		})
	}
	mk, err := singleton.NewSQLMarkers(db, singleton.MarkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mk.CreateTable(t.Context()); err != nil {
		t.Fatal(err)
	}
}
