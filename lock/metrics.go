package lock

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics records what Lockers do as Prometheus collectors: acquire waits,
// hold times, contention, refresh failures and lost leases, each labelled
// with the backend's name. Register it with a prometheus.Registerer and pass
// it in Options.Metrics; one Metrics may serve many Lockers. A nil *Metrics
// records nothing. Metrics is safe for concurrent use.
type Metrics struct {
	wait       *prometheus.HistogramVec
	hold       *prometheus.HistogramVec
	contention *prometheus.CounterVec
	refresh    *prometheus.CounterVec
	lost       *prometheus.CounterVec
	waiting    *prometheus.GaugeVec
	permits    *prometheus.GaugeVec // semaphores and reader-writer locks, per key
	keyWaiting *prometheus.GaugeVec // semaphores and reader-writer locks, per key
}

// NewMetrics returns collectors named haita_lock_*:
//
//	haita_lock_acquire_wait_seconds{backend,outcome}  histogram; outcome is acquired,
//	                                                  not_acquired, wait_limit, cancelled or error
//	haita_lock_hold_seconds{backend}                  histogram of lease lifetimes
//	haita_lock_contended_total{backend}               acquires that found the key held
//	haita_lock_refresh_failures_total{backend}        failed refreshes
//	haita_lock_lost_total{backend}                    leases that ended without Release
//	haita_lock_waiting{backend}                       Acquire calls waiting now
//	haita_lock_permits_in_use{backend,key}            permits held now by this process's
//	                                                  semaphores (a writer counts all of
//	                                                  lock.RWPermits), per key
//	haita_lock_key_waiting{backend,key}               semaphore and RWLocker Acquire calls
//	                                                  waiting now, per key
//
// The per-key series are only made for semaphores and RWLockers, whose keys
// are usually few; a series stays at zero once its key is idle.
func NewMetrics() *Metrics {
	buckets := prometheus.ExponentialBuckets(0.0001, 4, 10) // 100µs … 26s
	return &Metrics{
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "haita_lock_acquire_wait_seconds", Help: "Time from calling Acquire to its outcome.", Buckets: buckets,
		}, []string{"backend", "outcome"}),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "haita_lock_hold_seconds", Help: "Time from grant to the end of a lease.", Buckets: buckets,
		}, []string{"backend"}),
		contention: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haita_lock_contended_total", Help: "Acquire attempts that found the key held.",
		}, []string{"backend"}),
		refresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haita_lock_refresh_failures_total", Help: "Refreshes that failed.",
		}, []string{"backend"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haita_lock_lost_total", Help: "Leases that ended without Release.",
		}, []string{"backend"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haita_lock_waiting", Help: "Acquire calls waiting for a key held by another.",
		}, []string{"backend"}),
		permits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haita_lock_permits_in_use", Help: "Semaphore and reader-writer permits held, per key.",
		}, []string{"backend", "key"}),
		keyWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haita_lock_key_waiting", Help: "Semaphore and reader-writer Acquire calls waiting, per key.",
		}, []string{"backend", "key"}),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.wait.Describe(ch)
	m.hold.Describe(ch)
	m.contention.Describe(ch)
	m.refresh.Describe(ch)
	m.lost.Describe(ch)
	m.waiting.Describe(ch)
	m.permits.Describe(ch)
	m.keyWaiting.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.wait.Collect(ch)
	m.hold.Collect(ch)
	m.contention.Collect(ch)
	m.refresh.Collect(ch)
	m.lost.Collect(ch)
	m.waiting.Collect(ch)
	m.permits.Collect(ch)
	m.keyWaiting.Collect(ch)
}

var _ prometheus.Collector = (*Metrics)(nil)

func (m *Metrics) acquired(backend, outcome string, d time.Duration) {
	if m != nil {
		m.wait.WithLabelValues(backend, outcome).Observe(d.Seconds())
	}
}

func (m *Metrics) held(backend string, d time.Duration) {
	if m != nil {
		m.hold.WithLabelValues(backend).Observe(d.Seconds())
	}
}

func (m *Metrics) contended(backend string) {
	if m != nil {
		m.contention.WithLabelValues(backend).Inc()
	}
}

func (m *Metrics) refreshFailed(backend string) {
	if m != nil {
		m.refresh.WithLabelValues(backend).Inc()
	}
}

func (m *Metrics) leaseLost(backend string) {
	if m != nil {
		m.lost.WithLabelValues(backend).Inc()
	}
}

func (m *Metrics) waitingAdd(backend string, n float64) {
	if m != nil {
		m.waiting.WithLabelValues(backend).Add(n)
	}
}
