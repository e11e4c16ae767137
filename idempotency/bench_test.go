package idempotency_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/idempotency"
)

// countingStore counts the store calls (each one round trip on Redis; on
// SQL, Claim is one statement when it inserts and two when the key exists).
type countingStore struct {
	idempotency.Store
	calls atomic.Int64
}

func (s *countingStore) Claim(ctx context.Context, req idempotency.ClaimRequest) (idempotency.Record, error) {
	s.calls.Add(1)
	return s.Store.Claim(ctx, req)
}

func (s *countingStore) Complete(ctx context.Context, key, owner string, token uint64, value []byte, retention time.Duration) error {
	s.calls.Add(1)
	return s.Store.Complete(ctx, key, owner, token, value, retention)
}

// BenchmarkMiddleware measures the middleware's cost per request against
// the same handler without it (store=none), called in-process with
// httptest.NewRecorder: path=first is a new key every request (claim, run,
// store the response), path=replay the same key every time (one claim that
// finds the stored response). store-calls/op counts Claim and Complete.
func BenchmarkMiddleware(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":42,"status":"created"}`)
	})
	const body = `{"item":"tea","quantity":2}`
	serve := func(b *testing.B, h http.Handler, key string) {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		if key != "" {
			req.Header.Set("Idempotency-Key", `"`+key+`"`)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	b.Run("store=none", func(b *testing.B) {
		for b.Loop() {
			serve(b, handler, "")
		}
	})
	for _, k := range storeKinds {
		if k.name == "mariadb" {
			continue
		}
		b.Run("store="+k.name, func(b *testing.B) {
			cs := &countingStore{Store: k.open(b)}
			r, err := idempotency.New(cs, idempotency.Options{})
			if err != nil {
				b.Fatal(err)
			}
			mw, err := idempotency.Middleware(r, idempotency.HTTPOptions{})
			if err != nil {
				b.Fatal(err)
			}
			h := mw(handler)
			b.Run("path=first", func(b *testing.B) {
				cs.calls.Store(0)
				n := 0
				run := rand.Text() // keys unique across -count runs on one database
				for b.Loop() {
					n++
					serve(b, h, fmt.Sprintf("first-%s-%d", run, n))
				}
				b.ReportMetric(float64(cs.calls.Load())/float64(n), "store-calls/op")
			})
			b.Run("path=replay", func(b *testing.B) {
				serve(b, h, "replay")
				cs.calls.Store(0)
				n := 0
				for b.Loop() {
					n++
					serve(b, h, "replay")
				}
				b.ReportMetric(float64(cs.calls.Load())/float64(n), "store-calls/op")
			})
		})
	}
}
