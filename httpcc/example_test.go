package httpcc_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/haita/haita/httpcc"
)

// doc is one stored document; Version 0 means it does not exist.
type doc struct {
	Body    string
	Version int64
}

// docStore is an in-memory table of documents. Its mutex makes each method
// atomic, as one SQL statement would be.
type docStore struct {
	mu   sync.Mutex
	docs map[string]doc
}

func (s *docStore) get(id string) doc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docs[id]
}

// save stores body if the document's version is still expect, and returns
// the stored document and whether it saved: in SQL,
// UPDATE docs SET body = ?, version = version + 1 WHERE id = ? AND version = ?
// (or an INSERT that fails on the primary key when expect is 0).
func (s *docStore) save(id, body string, expect int64) (doc, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.docs[id]
	if cur.Version != expect {
		return cur, false
	}
	cur = doc{Body: body, Version: expect + 1}
	s.docs[id] = cur
	return cur, true
}

func state(d doc) httpcc.State {
	return httpcc.State{ETag: httpcc.ETag(d.Version), Exists: d.Version > 0}
}

func (s *docStore) handleGet(w http.ResponseWriter, r *http.Request) {
	d := s.get(r.PathValue("id"))
	if d.Version == 0 {
		http.NotFound(w, r) // §13.2.1: a 404 ignores the preconditions
		return
	}
	// Fields a 304 must repeat go on before CheckRead (RFC 9110 §15.4.5).
	w.Header().Set("Cache-Control", "private, no-cache")
	if !httpcc.CheckRead(w, r, state(d)) {
		return // 304 Not Modified, with ETag and Cache-Control
	}
	io.WriteString(w, d.Body)
}

func (s *docStore) handlePut(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	cur := s.get(id) // 1. read the current version
	if err := httpcc.Check(r, state(cur)); err != nil {
		httpcc.WriteError(w, err) // 2. 412 with the current ETag, or 400
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	// 3. save only if nobody saved since step 1. Without this, two requests
	// carrying the same If-Match could both pass Check and both save.
	saved, ok := s.save(id, string(body), cur.Version)
	if !ok {
		httpcc.WriteError(w, &httpcc.PreconditionError{Current: state(saved)})
		return
	}
	httpcc.SetValidators(w.Header(), state(saved))
	if cur.Version == 0 {
		w.WriteHeader(http.StatusCreated)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Example shows optimistic control of a document over HTTP: create with
// "If-None-Match: *", update with If-Match, a stale update refused with 412,
// an update without a precondition refused with 428.
func Example() {
	store := &docStore{docs: map[string]doc{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /docs/{id}", store.handleGet)
	mux.Handle("PUT /docs/{id}", httpcc.RequirePrecondition(http.HandlerFunc(store.handlePut)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	do := func(method, header, body string) {
		req, _ := http.NewRequest(method, srv.URL+"/docs/memo", strings.NewReader(body))
		if name, value, ok := strings.Cut(header, ": "); ok {
			req.Header.Set(name, value)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		text := string(b)
		if resp.Header.Get("Content-Type") == "application/problem+json" {
			var problem struct{ Detail string }
			json.Unmarshal(b, &problem)
			text = problem.Detail
		}
		line := fmt.Sprintf("%-4s %-20s -> %d %-4s %s", method, header, resp.StatusCode, resp.Header.Get("ETag"), text)
		fmt.Println(strings.TrimRight(line, " "))
	}

	do("PUT", "If-None-Match: *", "draft") // create if absent
	do("PUT", "If-None-Match: *", "other") // already exists
	do("GET", "", "")                      // read: ETag "v1"
	do("PUT", `If-Match: "v1"`, "final")   // update from v1
	do("PUT", `If-Match: "v1"`, "lost")    // stale: v2 is current
	do("PUT", "", "blind")                 // no precondition
	do("PUT", "If-Match: v2", "typo")      // malformed
	do("GET", `If-None-Match: "v2"`, "")   // cache still fresh
	do("GET", "", "")

	// Output:
	// PUT  If-None-Match: *     -> 201 "v1"
	// PUT  If-None-Match: *     -> 412 "v1" the resource already exists; its current entity-tag is "v1"
	// GET                       -> 200 "v1" draft
	// PUT  If-Match: "v1"       -> 204 "v2"
	// PUT  If-Match: "v1"       -> 412 "v2" the resource has changed since you read it; its current entity-tag is "v2"
	// PUT                       -> 428      PUT requires a precondition: send If-Match, If-Unmodified-Since or If-None-Match: * (the ETag from your last read goes in If-Match)
	// PUT  If-Match: v2         -> 400      malformed If-Match header: entity-tag must be in double quotes, found 'v' at offset 0
	// GET  If-None-Match: "v2"  -> 304 "v2"
	// GET                       -> 200 "v2" final
}

// ExampleETag shows the entity-tag of a version and the way back.
func ExampleETag() {
	tag := httpcc.ETag(42)
	v, err := httpcc.ParseVersion(tag)
	fmt.Println(tag, v, err)
	_, err = httpcc.ParseVersion(`W/"v42"`)
	fmt.Println(err)
	// Output:
	// "v42" 42 <nil>
	// httpcc: malformed entity-tag: "W/\"v42\"" is weak
}

// ExampleLockedError shows the 423 response for a write blocked by another
// user's checkout.
func ExampleLockedError() {
	since := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	err := fmt.Errorf("save memo: %w", &httpcc.LockedError{Holder: "alice", Since: since, Until: since.Add(30 * time.Minute)})

	w := httptest.NewRecorder()
	httpcc.WriteError(w, err)
	fmt.Println(w.Code, w.Header().Get("Content-Type"), w.Header().Get("Retry-After"))
	fmt.Print(w.Body)
	// Output:
	// 423 application/problem+json Sun, 01 Mar 2026 09:30:00 GMT
	// {"detail":"the resource is locked by alice until 2026-03-01T09:30:00Z","holder":"alice","since":"2026-03-01T09:00:00Z","status":423,"title":"Locked","type":"about:blank","until":"2026-03-01T09:30:00Z"}
}

// ExampleCheck evaluates If-Unmodified-Since, the updated-at style: the date
// has one-second granularity, so a change within the same second as the
// client's copy goes unnoticed; ETags do not have this gap.
func ExampleCheck() {
	updated := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cur := httpcc.State{LastModified: updated.Add(400 * time.Millisecond), Exists: true} // saved again within the second

	r := httptest.NewRequest("PUT", "/docs/memo", nil)
	r.Header.Set("If-Unmodified-Since", updated.Format(http.TimeFormat))
	fmt.Println(httpcc.Check(r, cur))

	cur.LastModified = updated.Add(time.Second)
	fmt.Println(httpcc.Check(r, cur))
	// Output:
	// <nil>
	// httpcc: precondition failed (If-Unmodified-Since)
}
