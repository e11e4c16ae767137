package faults

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/haita/haita/internal/webapp"
)

// Fuzz targets for parsers whose packages have none of their own (the
// sample app's API bodies). Seeds run in plain go test; scripts/test.sh
// fuzzes them for a bounded time.

// FuzzAPIBodies sends arbitrary bodies to every webapp API endpoint that
// reads one: no panic, no 5xx, and a 4xx always carries a problem document.
func FuzzAPIBodies(f *testing.F) {
	for _, s := range []string{"", "{}", `{"title":"t","body":"b","policy":"optimistic"}`, `{"body":"x"}`, "[]", "null", `{"x":1}`, "{", `{"body":"a"} {}`, "\x00"} {
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
		f.Add(uint8(2), s)
	}
	db, d, err := webapp.OpenDB(f.Context(), filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	app, err := webapp.New(f.Context(), webapp.Options{DB: db, Dialect: d, Seed: true, BcryptCost: bcrypt.MinCost,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { app.Close() })
	endpoints := []struct{ method, path string }{
		{"PUT", "/api/documents/fuzz"},
		{"POST", "/api/documents/contract/checkout"},
		{"POST", "/api/documents/contract/checkout/heartbeat"},
	}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		ep := endpoints[int(which)%len(endpoints)]
		req := httptest.NewRequest(ep.method, ep.path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+webapp.DemoToken("alice"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("If-Match", "*")
		w := httptest.NewRecorder()
		app.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", ep.method, ep.path, body, w.Code, w.Body)
		}
		if w.Code >= 400 && !bytes.Contains([]byte(w.Header().Get("Content-Type")), []byte("problem+json")) {
			t.Fatalf("%s %s %q: %d without a problem document: %s", ep.method, ep.path, body, w.Code, w.Header())
		}
	})
}
