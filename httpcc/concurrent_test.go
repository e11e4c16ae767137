package httpcc_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/haita/haita/httpcc"
)

// counterServer serves one JSON counter at /counter. GET returns
// {"value":n} with its ETag; PUT replaces it. How PUT guards the write
// depends on its fields, so the tests can show what each guard buys.
type counterServer struct {
	ifMatch    bool   // require and evaluate a precondition with httpcc
	versioned  bool   // save with a compare-and-swap on the version read
	afterCheck func() // called between Check and the save, to widen the race

	mu      sync.Mutex // guards value and version, like a row in a database
	value   int64
	version int64
}

func (s *counterServer) read() (value, version int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value, s.version
}

// save stores value if the version is still expect (or unconditionally when
// expect < 0): UPDATE counter SET value=?, version=version+1 WHERE version=?.
func (s *counterServer) save(value, expect int64) (newVersion int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if expect >= 0 && s.version != expect {
		return s.version, false
	}
	s.value = value
	s.version++
	return s.version, true
}

func (s *counterServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /counter", func(w http.ResponseWriter, r *http.Request) {
		value, version := s.read()
		httpcc.SetValidators(w.Header(), httpcc.State{ETag: httpcc.ETag(version), Exists: true})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"value":%d}`, value)
	})
	var put http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, version := s.read()
		if s.ifMatch {
			if err := httpcc.Check(r, httpcc.State{ETag: httpcc.ETag(version), Exists: true}); err != nil {
				httpcc.WriteError(w, err)
				return
			}
		}
		var body struct{ Value int64 }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if s.afterCheck != nil {
			s.afterCheck()
		}
		expect := int64(-1)
		if s.versioned {
			expect = version
		}
		newVersion, ok := s.save(body.Value, expect)
		if !ok {
			// Check passed, but another save came first: still a 412.
			httpcc.WriteError(w, &httpcc.PreconditionError{Current: httpcc.State{ETag: httpcc.ETag(newVersion), Exists: true}})
			return
		}
		httpcc.SetValidators(w.Header(), httpcc.State{ETag: httpcc.ETag(newVersion), Exists: true})
		w.WriteHeader(http.StatusNoContent)
	})
	if s.ifMatch {
		put = httpcc.RequirePrecondition(put)
	}
	mux.Handle("PUT /counter", put)
	return mux
}

// client talks to a counterServer.
type client struct {
	t    *testing.T
	http *http.Client
	url  string
}

func startCounter(t *testing.T, s *counterServer, conns int) *client {
	t.Helper()
	srv := httptest.NewServer(s.handler())
	tr := &http.Transport{MaxIdleConnsPerHost: conns}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return &client{t: t, http: &http.Client{Transport: tr}, url: srv.URL + "/counter"}
}

func (c *client) get() (value int64, etag string) {
	resp, err := c.http.Get(c.url)
	if err != nil {
		c.t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	var body struct{ Value int64 }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		c.t.Error(err)
	}
	return body.Value, resp.Header.Get("ETag")
}

// put sends value, with If-Match: etag unless etag is "", and returns the status.
func (c *client) put(value int64, etag string) int {
	req, err := http.NewRequest(http.MethodPut, c.url, bytes.NewReader(fmt.Appendf(nil, `{"value":%d}`, value)))
	if err != nil {
		c.t.Fatal(err)
	}
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Error(err)
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode == http.StatusPreconditionFailed && resp.Header.Get("ETag") == "" {
		c.t.Error("412 without the current ETag")
	}
	return resp.StatusCode
}

// TestConcurrentWritersNoLostUpdates runs many clients doing GET → PUT
// If-Match → retry on 412 against one counter: every successful PUT is
// counted in the final value.
func TestConcurrentWritersNoLostUpdates(t *testing.T) {
	const workers, perWorker = 12, 25
	c := startCounter(t, &counterServer{ifMatch: true, versioned: true}, workers)
	var ok, conflicts atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for done := 0; done < perWorker; {
				v, etag := c.get()
				switch st := c.put(v+1, etag); st {
				case http.StatusNoContent:
					ok.Add(1)
					done++
				case http.StatusPreconditionFailed:
					conflicts.Add(1)
				default:
					t.Errorf("PUT status %d", st)
					return
				}
			}
		})
	}
	wg.Wait()
	final, _ := c.get()
	t.Logf("%d successful PUTs, %d retried after 412, final value %d", ok.Load(), conflicts.Load(), final)
	if final != ok.Load() || final != workers*perWorker {
		t.Fatalf("final value %d, successful PUTs %d, want both %d: lost updates", final, ok.Load(), workers*perWorker)
	}
}

// TestLostUpdateRounds makes the race deterministic: in each round all
// clients GET the same value, then all PUT value+1 at once. Without If-Match
// (last write wins) every PUT succeeds and all but one increment per round is
// lost; with If-Match exactly one PUT per round succeeds and the others get
// 412, so nothing is lost.
func TestLostUpdateRounds(t *testing.T) {
	const workers, rounds = 8, 10
	tests := []struct {
		name          string
		guarded       bool // server: RequirePrecondition, Check and a versioned save
		sendIfMatch   bool
		wantOK        int64
		wantConflicts int64
		wantFinal     int64
	}{
		{"last-write-wins loses updates", false, false, workers * rounds, 0, rounds},
		{"If-Match loses none", true, true, rounds, (workers - 1) * rounds, rounds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startCounter(t, &counterServer{ifMatch: tt.guarded, versioned: tt.guarded}, workers)
			var ok, conflicts atomic.Int64
			for range rounds {
				var read, wrote sync.WaitGroup
				gate := make(chan struct{})
				read.Add(workers)
				for range workers {
					wrote.Go(func() {
						v, etag := c.get()
						read.Done()
						<-gate
						if !tt.sendIfMatch {
							etag = ""
						}
						switch st := c.put(v+1, etag); st {
						case http.StatusNoContent:
							ok.Add(1)
						case http.StatusPreconditionFailed:
							conflicts.Add(1)
						default:
							t.Errorf("PUT status %d", st)
						}
					})
				}
				read.Wait()
				close(gate)
				wrote.Wait()
			}
			final, _ := c.get()
			t.Logf("%d PUTs succeeded, %d got 412, final value %d, lost updates %d", ok.Load(), conflicts.Load(), final, ok.Load()-final)
			if ok.Load() != tt.wantOK || conflicts.Load() != tt.wantConflicts || final != tt.wantFinal {
				t.Fatalf("ok=%d conflicts=%d final=%d, want ok=%d conflicts=%d final=%d",
					ok.Load(), conflicts.Load(), final, tt.wantOK, tt.wantConflicts, tt.wantFinal)
			}
		})
	}
}

// TestCheckAloneIsARace holds two PUTs with the same If-Match between Check
// and the save. With a versioned save one of them gets 412; with Check alone
// (an unconditional save) both succeed and one increment is lost.
func TestCheckAloneIsARace(t *testing.T) {
	tests := []struct {
		name      string
		versioned bool
		wantOK    int64
		wantFinal int64
	}{
		{"check then unconditional save loses an update", false, 2, 1},
		{"check then versioned save does not", true, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var passed sync.WaitGroup
			passed.Add(2)
			s := &counterServer{ifMatch: true, versioned: tt.versioned, afterCheck: func() {
				passed.Done()
				passed.Wait() // both requests have passed Check
			}}
			c := startCounter(t, s, 2)
			v, etag := c.get()
			var ok atomic.Int64
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					switch st := c.put(v+1, etag); st {
					case http.StatusNoContent:
						ok.Add(1)
					case http.StatusPreconditionFailed:
					default:
						t.Errorf("PUT status %d", st)
					}
				})
			}
			wg.Wait()
			final, _ := c.get()
			if ok.Load() != tt.wantOK || final != tt.wantFinal {
				t.Fatalf("ok=%d final=%d, want ok=%d final=%d", ok.Load(), final, tt.wantOK, tt.wantFinal)
			}
		})
	}
}

func TestPutWithoutIfMatchIs428(t *testing.T) {
	c := startCounter(t, &counterServer{ifMatch: true, versioned: true}, 1)
	if st := c.put(1, ""); st != http.StatusPreconditionRequired {
		t.Fatalf("PUT without If-Match: status %d, want 428", st)
	}
	if v, _ := c.get(); v != 0 {
		t.Fatalf("value %d after a refused PUT", v)
	}
}
