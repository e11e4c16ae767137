package singleton_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/robfig/cron/v3"
	_ "modernc.org/sqlite"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/singleton"
)

// exampleSetup returns a file-lock Locker and SQLite markers in a temporary
// directory, and a function that removes them.
func exampleSetup(holder string) (lock.Locker, *singleton.SQLMarkers, func()) {
	dir, err := os.MkdirTemp("", "singleton-example")
	if err != nil {
		log.Fatal(err)
	}
	l, err := filelock.New(filepath.Join(dir, "locks"), lock.Options{Holder: holder})
	if err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "runs.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	mk, err := singleton.NewSQLMarkers(db, singleton.MarkerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := mk.CreateTable(context.Background()); err != nil {
		log.Fatal(err)
	}
	return l, mk, func() { l.Close(); db.Close(); os.RemoveAll(dir) }
}

// The 01:00 job of two schedulers whose clocks differ by four seconds runs
// once.
func ExampleRunner_RunSlot() {
	l, mk, done := exampleSetup("node-a")
	defer done()
	r, err := singleton.New(l, singleton.Options{Markers: mk, Holder: "node-a"})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	due := time.Date(2026, 3, 1, 1, 0, 0, 0, time.UTC)
	for _, clock := range []time.Time{due.Add(-2 * time.Second), due.Add(2 * time.Second)} {
		err := r.RunSlot(ctx, "nightly-report", singleton.Slot(clock, time.Hour), func(ctx context.Context) error {
			fmt.Println("running the report for", singleton.Slot(clock, time.Hour))
			return nil
		})
		var de *singleton.DoneError
		if errors.As(err, &de) {
			fmt.Println("skipped: already", de.State, "by", de.By)
		}
	}
	// Output:
	// running the report for 2026-03-01T01:00:00Z
	// skipped: already done by node-a
}

// In Skip mode a second runner learns who runs the job.
func ExampleRunner_Run() {
	l, _, done := exampleSetup("node-a")
	defer done()
	r, _ := singleton.New(l, singleton.Options{})
	ctx := context.Background()
	err := r.Run(ctx, "reindex", func(ctx context.Context) error {
		// ctx ends if the lease is lost: stop then.
		return r.Run(ctx, "reindex", func(context.Context) error { return nil })
	})
	var re *singleton.RunningError
	if errors.As(err, &re) {
		fmt.Println("skipped: running on", re.Holder)
	}
	// Output:
	// skipped: running on node-a
}

// gocron v2: the distributed Locker with once-per-slot.
func ExampleRunner_GocronLocker() {
	l, mk, done := exampleSetup("node-a")
	defer done()
	r, _ := singleton.New(l, singleton.Options{Markers: mk})
	s, err := gocron.NewScheduler(gocron.WithDistributedLocker(r.GocronLocker(singleton.GocronOptions{Every: time.Minute})))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := s.NewJob(gocron.DurationJob(time.Minute), gocron.NewTask(func() { fmt.Println("tick") }),
		gocron.WithName("tick")); err != nil {
		log.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
}

// robfig/cron v3: wrap jobs so that each slot runs once across nodes.
func ExampleRunner_CronWrapper() {
	l, mk, done := exampleSetup("node-a")
	defer done()
	r, _ := singleton.New(l, singleton.Options{Markers: mk, Mode: singleton.Wait})
	c := cron.New()
	// One wrapper per job: its name is the lock key and the marker's job.
	digest := r.CronWrapper("digest", singleton.CronOptions{
		Every:   time.Hour,
		OnError: func(err error) { log.Println(err) },
	})
	if _, err := c.AddJob("@hourly", cron.NewChain(digest).Then(cron.FuncJob(func() { fmt.Println("send digest") }))); err != nil {
		log.Fatal(err)
	}
	c.Start()
	<-c.Stop().Done()
}
