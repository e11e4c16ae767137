package racelab

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// stats collects the operations, retries and waits of one case. It is safe
// for concurrent use.
type stats struct {
	ops     atomic.Int64
	retries atomic.Int64
	mu      sync.Mutex
	waits   []time.Duration
}

// op is one operation in progress. The wait of an operation is the time from
// its start to the start of its last attempt: time spent waiting for a lock,
// or lost to attempts that conflicted and their backoff. An operation that
// never calls attempt waited zero.
type op struct {
	start    time.Time
	last     time.Time
	attempts int
}

// attempt marks the start of an attempt (for a lock: the moment it was
// granted). Every attempt after the first counts as a retry.
func (o *op) attempt() {
	o.attempts++
	o.last = time.Now()
}

// retry counts a retry that is not followed by another attempt call.
func (o *op) retry() { o.attempts++ }

func (s *stats) do(fn func(o *op) error) error {
	o := &op{start: time.Now()}
	if err := fn(o); err != nil {
		return err
	}
	s.record(o)
	return nil
}

func (s *stats) record(o *op) {
	s.ops.Add(1)
	if o.attempts > 1 {
		s.retries.Add(int64(o.attempts - 1))
	}
	var w time.Duration
	if !o.last.IsZero() {
		w = o.last.Sub(o.start)
	}
	s.addWait(w)
}

func (s *stats) addWait(w time.Duration) {
	s.mu.Lock()
	s.waits = append(s.waits, w)
	s.mu.Unlock()
}

// merge adds another process's counts.
func (s *stats) merge(w workerStats) {
	s.ops.Add(w.Ops)
	s.retries.Add(w.Retries)
	s.mu.Lock()
	for _, us := range w.WaitsUs {
		s.waits = append(s.waits, time.Duration(us)*time.Microsecond)
	}
	s.mu.Unlock()
}

// percentiles returns the p50 and p99 wait in milliseconds.
func (s *stats) percentiles() (p50, p99 float64) {
	s.mu.Lock()
	w := slices.Clone(s.waits)
	s.mu.Unlock()
	if len(w) == 0 {
		return 0, 0
	}
	slices.Sort(w)
	at := func(q float64) float64 {
		i := int(q * float64(len(w)-1))
		return ms(w[i])
	}
	return at(0.50), at(0.99)
}

// workerStats is what a worker process reports on its last line.
type workerStats struct {
	Ops        int64   `json:"ops"`
	Retries    int64   `json:"retries"`
	WaitsUs    []int64 `json:"waits_us"`
	Violations int64   `json:"violations"`
	Error      string  `json:"error,omitempty"`
}

func (s *stats) export() workerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := workerStats{Ops: s.ops.Load(), Retries: s.retries.Load()}
	for _, w := range s.waits {
		ws.WaitsUs = append(ws.WaitsUs, w.Microseconds())
	}
	return ws
}
