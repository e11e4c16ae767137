package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestRaceJSON checks the shape of "haita race --json": an array of
// objects carrying the documented fields with the documented types, and
// the progress on stderr, not stdout.
func TestRaceJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"--json", "--engine", "memory", "--scenario", "1,2", "--variant", "read-modify-write,sync.Mutex,atomic.Add", "--ops", "10", "--sweep", "none"}
	if err := run(t.Context(), append([]string{"race"}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("race: %v\n%s", err, stderr.String())
	}
	var results []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &results); err != nil {
		t.Fatalf("stdout is not a JSON array: %v\n%s", err, stdout.String())
	}
	if len(results) != 3 {
		t.Fatalf("%d results, want 3:\n%s", len(results), stdout.String())
	}
	want := map[string]string{
		"scenario": "string", "variant": "string", "kind": "string", "engine": "string",
		"workers": "number", "ops": "number", "violations": "number", "ops_per_sec": "number",
		"retries": "number", "wait_p50_ms": "number", "wait_p99_ms": "number",
		"scenario_id": "number", "title": "string", "mode": "string", "violation_unit": "string",
		"detail": "string", "window_ms": "number", "duration_ms": "number",
	}
	var variants []string
	for _, r := range results {
		for k, typ := range want {
			v, ok := r[k]
			if !ok {
				t.Errorf("result %v lacks %q", r["variant"], k)
				continue
			}
			got := "string"
			if _, isNum := v.(float64); isNum {
				got = "number"
			}
			if got != typ {
				t.Errorf("%q is a %s (%v), want a %s", k, got, v, typ)
			}
		}
		variants = append(variants, r["variant"].(string)+"/"+r["kind"].(string))
		if r["kind"] == "broken" && r["violations"].(float64) == 0 {
			t.Errorf("broken %v: no violations", r["variant"])
		}
		if r["kind"] == "fixed" && r["violations"].(float64) != 0 {
			t.Errorf("fixed %v: %v violations", r["variant"], r["violations"])
		}
	}
	if w := []string{"read-modify-write/broken", "sync.Mutex/fixed", "atomic.Add/fixed"}; !slices.Equal(variants, w) {
		t.Errorf("variants %v, want %v", variants, w)
	}
	if !strings.Contains(stderr.String(), "widened on purpose") || !strings.Contains(stderr.String(), "[3/3]") {
		t.Errorf("stderr lacks the window notice or progress:\n%s", stderr.String())
	}
}

// TestRaceTable checks the human output: the table with its header, a
// verdict line, and the window notice.
func TestRaceTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"race", "--engine", "memory", "--scenario", "memory", "--ops", "5", "--sweep", "none"}, &stdout, &stderr); err != nil {
		t.Fatalf("race: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, s := range []string{"widened on purpose", "VIOLATIONS", "OPS/S", "WAIT P99", "sync.Map load+store", "✗", "✓", "broken variants violated their invariant"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestRaceUsage(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown engine":   {"race", "--engine", "oracle"},
		"unknown scenario": {"race", "--scenario", "99"},
		"bad sweep":        {"race", "--sweep", "0"},
		"argument":         {"race", "extra"},
		"no case":          {"race", "--engine", "memory", "--variant", "nonesuch"},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			var ue *usageError
			if err := run(t.Context(), args, &stdout, &stderr); !errors.As(err, &ue) {
				t.Fatalf("error %v, want a usage error", err)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"race-worker", "nonsense"}, &stdout, &stderr); err == nil {
		t.Fatal("race-worker ran an unknown worker")
	}
}

// TestRaceMySQLURL: --mysql takes the mysql:// URL that serve's --db takes
// (or a driver DSN), and a URL it cannot read is a usage error.
func TestRaceMySQLURL(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"race", "--list", "--engine", "mysql", "--scenario", "counter,paused-holder", "--sweep", "none", "--mysql", "mysql://root@127.0.0.1:1/lab"}
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("race --list with a MySQL URL: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"mysqllock across processes", "mysqllock, fenced write"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout.String())
		}
	}
	err := run(t.Context(), []string{"race", "--list", "--mysql", "mysql://root@127.0.0.1:1/"}, &stdout, &stderr)
	var usage *usageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "names no database") {
		t.Errorf("race with a MySQL URL without a database: %v, want a usage error naming the database", err)
	}
}
