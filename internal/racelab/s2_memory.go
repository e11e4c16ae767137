package racelab

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/memlock"
)

// memoryScenario is S6 (a concurrent map does not make getOrDefault + put
// atomic) and S5 (a shared object that is not goroutine-safe, like Java's
// SimpleDateFormat, gives wrong results).
func memoryScenario() *Scenario {
	return &Scenario{
		ID: 2, Name: "memory", Title: "Compound operation on a concurrent map; a shared non-goroutine-safe object",
		Seeds: "S5 S6 S7", Unit: "lost increments / wrong results", Workers: 8, Ops: 40,
		cases: func(e *env) []Case {
			return []Case{
				{Variant: "sync.Map load+store", Kind: Broken, Engine: Memory, run: mapCount(mapLoadStore)},
				{Variant: "memlock.Map.Update", Kind: Fixed, Engine: Memory, run: mapCount(mapUpdate)},
				{Variant: "memlock per-key lock", Kind: Fixed, Engine: Memlock, run: mapCount(mapKeyLock)},
				{Variant: "shared formatter", Kind: Broken, Engine: Memory, run: formatter(fmtShared)},
				{Variant: "formatter under mutex", Kind: Fixed, Engine: Memory, run: formatter(fmtMutex)},
				{Variant: "formatter per goroutine", Kind: Fixed, Engine: Memory, run: formatter(fmtPerWorker)},
				{Variant: "immutable formatter", Kind: Fixed, Engine: Memory, run: formatter(fmtImmutable)},
			}
		},
	}
}

type mapImpl int

const (
	mapLoadStore mapImpl = iota
	mapUpdate
	mapKeyLock
)

// mapKeys is how many keys the workers count on: few, so they collide.
const mapKeys = 4

// mapCount counts word occurrences in a shared map from every worker.
func mapCount(impl mapImpl) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		var sm sync.Map
		var mm memlock.Map[string, int64]
		var l lock.Locker
		if impl == mapKeyLock {
			ml, err := memlock.New(lock.Options{})
			if err != nil {
				return 0, "", err
			}
			defer ml.Close()
			l = ml
		}
		err := rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			k := "word" + strconv.Itoa((w+i)%mapKeys)
			switch impl {
			case mapLoadStore: // counts.put(k, counts.getOrDefault(k, 0) + 1)
				o.attempt()
				v, _ := sm.Load(k)
				n, _ := v.(int64)
				rc.widen()
				sm.Store(k, n+1)
			case mapUpdate:
				o.attempt()
				rc.widen()
				mm.Update(k, func(old int64, _ bool) (int64, bool) { return old + 1, true })
			case mapKeyLock: // S7: lock only the key, not the whole map
				le, err := l.Acquire(ctx, rc.key(k))
				if err != nil {
					return err
				}
				o.attempt()
				v, _ := sm.Load(k)
				n, _ := v.(int64)
				rc.widen()
				sm.Store(k, n+1)
				if err := le.Release(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		var total int64
		for i := range mapKeys {
			k := "word" + strconv.Itoa(i)
			if impl == mapUpdate {
				n, _ := mm.Load(k)
				total += n
			} else if v, ok := sm.Load(k); ok {
				total += v.(int64)
			}
		}
		ops := rc.stats.ops.Load()
		return ops - total, fmt.Sprintf("%d increments over %d keys, map holds %d", ops, mapKeys, total), err
	}
}

// dateFormatter imitates java.text.SimpleDateFormat: Format stores the time
// in a field (its Calendar) and then formats from that field. Shared between
// goroutines, one goroutine's time is formatted by another. (The field is
// atomic so that the race detector stays quiet: the bug is a logic race, as
// in Java, not a torn word.)
type dateFormatter struct {
	cal    atomic.Int64
	layout string
	window time.Duration
}

func (f *dateFormatter) Format(t time.Time) string {
	f.cal.Store(t.UnixNano())
	time.Sleep(f.window) // the formatting work between setTime and reading the fields
	return time.Unix(0, f.cal.Load()).UTC().Format(f.layout)
}

// formatImmutable is the goroutine-safe alternative: no state at all
// (time.Time.Format, Java's DateTimeFormatter).
func formatImmutable(t time.Time, layout string, window time.Duration) string {
	time.Sleep(window)
	return t.UTC().Format(layout)
}

type fmtImpl int

const (
	fmtShared fmtImpl = iota
	fmtMutex
	fmtPerWorker
	fmtImmutable
)

// formatter formats distinct dates from every worker and counts results
// that are not the date the worker passed in.
func formatter(impl fmtImpl) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		const layout = "2006-01-02 15:04:05"
		shared := &dateFormatter{layout: layout, window: rc.window}
		own := make([]*dateFormatter, rc.workers)
		for i := range own {
			own[i] = &dateFormatter{layout: layout, window: rc.window}
		}
		var mu sync.Mutex
		var wrong atomic.Int64
		base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		err := rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			t := base.Add(time.Duration(w*100000+i) * time.Second)
			var s string
			switch impl {
			case fmtShared:
				o.attempt()
				s = shared.Format(t)
			case fmtMutex:
				mu.Lock()
				o.attempt()
				s = shared.Format(t)
				mu.Unlock()
			case fmtPerWorker:
				o.attempt()
				s = own[w].Format(t)
			case fmtImmutable:
				o.attempt()
				s = formatImmutable(t, layout, rc.window)
			}
			if s != t.Format(layout) {
				wrong.Add(1)
			}
			return nil
		})
		return wrong.Load(), fmt.Sprintf("%d of %d formatted dates were another goroutine's", wrong.Load(), rc.stats.ops.Load()), err
	}
}
