package lock_test

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/memlock"
)

func TestSemaphoreMetricsPerKey(t *testing.T) {
	m := lock.NewMetrics()
	s, err := memlock.NewSemaphore(lock.Options{Metrics: m}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.Acquire(t.Context(), "exports")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Acquire(t.Context(), "exports")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		le, err := s.Acquire(t.Context(), "exports")
		if err == nil {
			err = le.Release(t.Context())
		}
		got <- err
	}()
	locktest.WaitUntilWaiting(t, s, "exports", 1)
	if n := value(t, m.PermitsInUse("memlock", "exports")); n != 2 {
		t.Errorf("permits in use = %v, want 2", n)
	}
	if value(t, m.KeyWaiting("memlock", "exports")) != 1 {
		t.Errorf("waiters = %v, want 1", value(t, m.KeyWaiting("memlock", "exports")))
	}
	if err := a.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := b.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := value(t, m.PermitsInUse("memlock", "exports")); n != 0 {
		t.Errorf("permits in use after every release = %v, want 0", n)
	}
	if n := value(t, m.KeyWaiting("memlock", "exports")); n != 0 {
		t.Errorf("waiters after the wait = %v, want 0", n)
	}
}

func TestNewSemaphoreRejectsBadLimits(t *testing.T) {
	for _, limit := range []int{0, -1, lock.RWPermits} {
		if _, err := memlock.NewSemaphore(lock.Options{}, limit); !errors.Is(err, lock.ErrInvalidOptions) {
			t.Errorf("NewSemaphore(limit %d) = %v, want ErrInvalidOptions", limit, err)
		}
	}
}

// value reads a gauge.
func value(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
