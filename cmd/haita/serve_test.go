package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errOut syncBuffer
	db := filepath.Join(t.TempDir(), "haita.db")
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--db", db}, &out, &errOut) }()

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "press Ctrl-C") {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s\n%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{"alice  / alice  / haita-demo-alice", "admin  / admin  / haita-demo-admin  (administrator)", "(database: sqlite)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	url := regexp.MustCompile(`http://\S+`).FindString(out.String())
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url+"/api/documents/contract", nil)
	req.Header.Set("Authorization", "Bearer haita-demo-bob")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"v1"` {
		t.Fatalf("GET a demo document: %d %s", resp.StatusCode, body)
	}
	// An open event stream must not hold up the shutdown.
	ereq, _ := http.NewRequestWithContext(t.Context(), "GET", url+"/events", nil)
	ereq.Header.Set("Authorization", "Bearer haita-demo-bob")
	eresp, err := http.DefaultClient.Do(ereq)
	if err != nil {
		t.Fatal(err)
	}
	defer eresp.Body.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not shut down")
	}
}

func TestServeFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	var ue *usageError
	err := run(t.Context(), []string{"serve", "--nope"}, &out, &errOut)
	if !errors.As(err, &ue) {
		t.Fatalf("unknown flag: %v", err)
	}
	err = run(t.Context(), []string{"serve", "extra"}, &out, &errOut)
	if !errors.As(err, &ue) {
		t.Fatalf("extra argument: %v", err)
	}
	err = run(t.Context(), []string{"serve", "--db", "mysql://u@127.0.0.1:1/"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "names no database") {
		t.Fatalf("MySQL URL without a database: %v", err)
	}
}
