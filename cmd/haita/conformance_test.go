package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConditionalRequestsRFC9110 is the conformance test of haita serve's
// document API against RFC 9110 §13 (conditional requests). It builds the
// haita binary, runs "haita serve" as a process on its embedded SQLite
// database on a free port, and sends every combination of If-Match,
// If-None-Match, If-Unmodified-Since and If-Modified-Since in the table
// below, for GET, PUT and DELETE on a document of each policy. Each row
// checks the status, the validators and cache fields of the response, and,
// by reading the document back over HTTP, whether the stored document
// changed: it must change exactly when the response is 2xx.
//
// The expected outcome is computed by [rfc9110Outcome], written from the
// RFC's evaluation order (§13.2.2) and the policy table in
// docs/conditional-requests.md, independently of package httpcc.
func TestConditionalRequestsRFC9110(t *testing.T) {
	base := startServe(t)
	var (
		mu     sync.Mutex
		failed = map[string][]string{} // method/policy → failing rows, for the summary
		wg     sync.WaitGroup
	)
	// Each method and policy runs in shards, each with its own fixture
	// document, concurrently (goroutines rather than t.Parallel, whose
	// limit is GOMAXPROCS: the rows wait on the server, not the CPU). GET
	// does the same for every policy, so each GET row runs on one of them.
	const shards = 2
	policies := []string{"last-write-wins", "optimistic", "pessimistic"}
	for _, method := range []string{"GET", "PUT", "DELETE"} {
		all := conditionRows(method)
		for pi, policy := range policies {
			var rows []condRow
			for i, row := range all {
				if method != "GET" || i%len(policies) == pi {
					rows = append(rows, row)
				}
			}
			for shard := range shards {
				c := &conformanceClient{t: t, base: base, policy: policy,
					prefix: fmt.Sprintf("%s%s%d", strings.ToLower(method[:1]), policy[:1], shard)}
				wg.Go(func() {
					c.newFixture(t)
					for i := shard; i < len(rows); i += shards {
						row := rows[i]
						t.Run(method+"/"+policy+"/"+row.name(), func(t *testing.T) {
							if !c.runRow(t, method, row) {
								mu.Lock()
								failed[method+"/"+policy] = append(failed[method+"/"+policy], row.name())
								mu.Unlock()
							}
						})
					}
				})
			}
		}
	}
	wg.Wait()
	// The seed's updated-at technique: two saves based on one read, the
	// second with the read's date, fall in one second more often than not.
	// Every version has its own modification second, so the second save
	// is refused whenever it comes.
	for _, policy := range policies {
		t.Run("PUT/"+policy+"/two saves from one read", func(t *testing.T) {
			c := &conformanceClient{t: t, base: base, policy: policy, prefix: "s" + policy[:1]}
			c.newFixture(t)
			fx := c.fx
			date := fx.lastModified.Format(http.TimeFormat)
			h := map[string]string{"If-Unmodified-Since": date, "Checkout-Token": fx.token}
			if resp, b := c.do(t, "PUT", "/api/documents/"+fx.id, `{"body":"first"}`, h); resp.StatusCode != http.StatusOK {
				t.Fatalf("first save: %d %s", resp.StatusCode, b)
			}
			if resp, b := c.do(t, "PUT", "/api/documents/"+fx.id, `{"body":"second"}`, h); resp.StatusCode != http.StatusPreconditionFailed {
				t.Errorf("second save with the same If-Unmodified-Since: %d, want 412: %s", resp.StatusCode, b)
			}
			resp, b := c.do(t, "GET", "/api/documents/"+fx.id, "", nil)
			if d := decodeDoc(t, resp, b); d.Body != "first" {
				t.Errorf("stored %q: the first save was lost", d.Body)
			}
		})
	}
	for k, rows := range failed {
		t.Logf("%s: %d rows failed, first: %s", k, len(rows), rows[0])
	}
}

// The header values of the table. Dates are relative to the document's
// Last-Modified (LM); tags to its ETag, "v1" for a new document.
type condValue struct {
	label string
	value func(fx fixture) string // "" sends no field
}

var (
	absent = condValue{"absent", func(fixture) string { return "" }}

	ifMatchValues = []condValue{
		absent,
		{"current", func(fx fixture) string { return fx.etag }},
		{"stale", func(fixture) string { return `"v99"` }},
		{"weak-current", func(fx fixture) string { return "W/" + fx.etag }},
		{"list-with-current", func(fx fixture) string { return `"v98", ` + fx.etag }},
		{"star", func(fixture) string { return "*" }},
		{"malformed", func(fixture) string { return "v1" }},
	}
	ifNoneMatchValues = []condValue{
		absent,
		{"star", func(fixture) string { return "*" }},
		{"current", func(fx fixture) string { return fx.etag }},
		{"weak-current", func(fx fixture) string { return "W/" + fx.etag }},
		{"list-other", func(fixture) string { return `"v98", W/"v99"` }},
	}
	dateValues = []condValue{
		absent,
		{"current", func(fx fixture) string { return fx.lastModified.Format(http.TimeFormat) }},
		{"stale", func(fx fixture) string { return fx.lastModified.Add(-time.Hour).Format(http.TimeFormat) }},
		{"invalid", func(fixture) string { return "yesterday" }},
		{"list", func(fx fixture) string {
			d := fx.lastModified.Add(time.Hour).Format(http.TimeFormat)
			return d + ", " + d
		}},
	}
)

// condRow is one combination of the four preconditions.
type condRow struct {
	im, inm, ius, ims condValue
}

func (r condRow) name() string {
	return fmt.Sprintf("IM=%s,INM=%s,IUS=%s,IMS=%s", r.im.label, r.inm.label, r.ius.label, r.ims.label)
}

// conditionRows returns the rows for method: every combination of the
// values above for GET. PUT and DELETE, which must ignore
// If-Modified-Since, take every combination of the other three, with
// If-Modified-Since alternately absent and a stale date (which would make a
// GET answer 200 rather than 304).
func conditionRows(method string) []condRow {
	var rows []condRow
	for _, im := range ifMatchValues {
		for _, inm := range ifNoneMatchValues {
			for _, ius := range dateValues {
				if method != "GET" {
					rows = append(rows, condRow{im, inm, ius, dateValues[2*(len(rows)%2)]})
					continue
				}
				for _, m := range dateValues {
					rows = append(rows, condRow{im, inm, ius, m})
				}
			}
		}
	}
	return rows
}

// fixture is the document a row runs against, as stored before the row.
type fixture struct {
	id, etag, body string
	version        float64
	lastModified   time.Time // updated_at at one-second granularity
	token          string    // the holder's checkout token (pessimistic)
	cacheControl   string    // the 200 response's Cache-Control
	vary           string    // the 200 response's Vary
}

// outcome is what RFC 9110 and the policy table make of a request.
type outcome struct {
	status int
	header string // the precondition that decided a 412 or 304, or the reason for a 400 or 428
}

// rfc9110Outcome computes the expected status of a request to an existing
// document. It follows RFC 9110 §13.2.2 step by step:
//
//  1. If-Match present: false → 412. Else If-Unmodified-Since present and a
//     valid HTTP-date: Last-Modified later than it → 412 (§13.1.4: an
//     invalid date, a list of dates included, is ignored).
//  2. If-None-Match present: false → 304 for GET, 412 otherwise. Else, for
//     GET, If-Modified-Since present and valid: Last-Modified not later
//     than it → 304 (§13.1.3: invalid dates ignored; ignored on PUT and
//     DELETE).
//  3. Perform the method.
//
// Before evaluation, a malformed If-Match is answered 400, and the policy
// table applies RFC 6585's 428 to writes that need a precondition and carry
// none that is evaluated: an optimistic PUT, and every DELETE, need If-Match,
// a valid If-Unmodified-Since, or "If-None-Match: *".
func rfc9110Outcome(method, policy string, r condRow, fx fixture) outcome {
	im, inm := r.im.value(fx), r.inm.value(fx)
	ius, iusErr := http.ParseTime(r.ius.value(fx))
	ims, imsErr := http.ParseTime(r.ims.value(fx))
	if r.im.label == "malformed" {
		return outcome{400, "If-Match"}
	}
	if method != "GET" {
		guarded := im != "" || iusErr == nil || inm == "*"
		if !guarded && (method == "DELETE" || policy == "optimistic") {
			return outcome{428, "precondition required"}
		}
	}
	// Step 1 and 2.
	if im != "" {
		if !ifMatchTrue(im, fx.etag) {
			return outcome{412, "If-Match"}
		}
	} else if iusErr == nil && fx.lastModified.After(ius) {
		return outcome{412, "If-Unmodified-Since"}
	}
	// Step 3 and 4.
	if inm != "" {
		if !ifNoneMatchTrue(inm, fx.etag) {
			if method == "GET" {
				return outcome{304, "If-None-Match"}
			}
			return outcome{412, "If-None-Match"}
		}
	} else if method == "GET" && imsErr == nil && !fx.lastModified.After(ims) {
		return outcome{304, "If-Modified-Since"}
	}
	switch method {
	case "PUT":
		return outcome{200, ""}
	case "DELETE":
		return outcome{204, ""}
	}
	return outcome{200, ""}
}

// ifMatchTrue is §13.1.1 for an existing document: "*", or a strong tag
// equal to the current one (strong comparison, §8.8.3.2).
func ifMatchTrue(v, cur string) bool {
	if v == "*" {
		return true
	}
	for _, t := range strings.Split(v, ",") {
		if strings.TrimSpace(t) == cur {
			return true
		}
	}
	return false
}

// ifNoneMatchTrue is §13.1.2 for an existing document: false for "*" or a
// tag equal to the current one under the weak comparison.
func ifNoneMatchTrue(v, cur string) bool {
	if v == "*" {
		return false
	}
	for _, t := range strings.Split(v, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == cur {
			return false
		}
	}
	return true
}

// conformanceClient runs the rows of one method and policy, keeping a
// fixture document that it replaces whenever a row changed it.
type conformanceClient struct {
	t                  *testing.T
	base               string
	policy             string
	prefix             string
	n                  int
	fx                 fixture
	cacheControl, vary string // of a 200 to a read
}

func (c *conformanceClient) do(t *testing.T, method, path, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer haita-demo-alice")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := conformanceHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// newFixture creates a new document of the client's policy (checked out
// by alice if pessimistic) and records its state.
func (c *conformanceClient) newFixture(t *testing.T) {
	c.n++
	id := fmt.Sprintf("rfc-%s-%d", c.prefix, c.n)
	body := fmt.Sprintf("fixture %s", id)
	resp, b := c.do(t, "PUT", "/api/documents/"+id,
		fmt.Sprintf(`{"title":"RFC 9110 %s","body":%q,"policy":%q}`, id, body, c.policy), map[string]string{"If-None-Match": "*"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create %s: %d %s", id, resp.StatusCode, b)
	}
	fx := fixture{id: id, body: body}
	if c.policy == "pessimistic" {
		resp, b := c.do(t, "POST", "/api/documents/"+id+"/checkout", "", nil)
		var co struct{ Token string }
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &co) != nil || co.Token == "" {
			t.Fatalf("check out %s: %d %s", id, resp.StatusCode, b)
		}
		fx.token = co.Token
	}
	if c.n == 1 {
		// The fields a 200 to a read carries, which a 304 must repeat.
		resp, b := c.do(t, "GET", "/api/documents/"+id, "", nil)
		decodeDoc(t, resp, b)
		c.cacheControl, c.vary = resp.Header.Get("Cache-Control"), resp.Header.Get("Vary")
	}
	fx.cacheControl, fx.vary = c.cacheControl, c.vary
	var d storedDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("create %s: %v: %s", id, err, b)
	}
	fx.etag, fx.version = resp.Header.Get("ETag"), d.Version
	// Taken from the body, which has always carried it, so that the table
	// can run against a server that sends no Last-Modified.
	fx.lastModified = d.UpdatedAt.UTC().Truncate(time.Second)
	c.fx = fx
}

type storedDoc struct {
	Body      string    `json:"body"`
	Version   float64   `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

func decodeDoc(t *testing.T, resp *http.Response, b []byte) storedDoc {
	t.Helper()
	var d storedDoc
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("read document: %d %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("read document: %v: %s", err, b)
	}
	return d
}

// runRow sends the row's request against the fixture and checks the
// response and the stored document. It reports whether the row passed.
func (c *conformanceClient) runRow(t *testing.T, method string, row condRow) bool {
	fx := c.fx
	want := rfc9110Outcome(method, c.policy, row, fx)
	h := map[string]string{
		"If-Match":            row.im.value(fx),
		"If-None-Match":       row.inm.value(fx),
		"If-Unmodified-Since": row.ius.value(fx),
		"If-Modified-Since":   row.ims.value(fx),
	}
	if method != "GET" && fx.token != "" {
		h["Checkout-Token"] = fx.token
	}
	newBody := ""
	reqBody := ""
	if method == "PUT" {
		newBody = "saved by " + t.Name()
		reqBody = fmt.Sprintf(`{"body":%q}`, newBody)
	}
	resp, body := c.do(t, method, "/api/documents/"+fx.id, reqBody, h)
	if resp.StatusCode != want.status {
		t.Errorf("status %d, want %d (%s): %s", resp.StatusCode, want.status, want.header, strings.TrimSpace(string(body)))
	}
	got := resp.StatusCode
	hdr := resp.Header
	lmWant := fx.lastModified.Format(http.TimeFormat)
	switch {
	case got == http.StatusOK && method == "GET":
		if hdr.Get("ETag") != fx.etag {
			t.Errorf("200: ETag %q, want %q", hdr.Get("ETag"), fx.etag)
		}
		if hdr.Get("Last-Modified") != lmWant {
			t.Errorf("200: Last-Modified %q, want %q (RFC 9110 §8.8.2: send it when known)", hdr.Get("Last-Modified"), lmWant)
		}
	case got == http.StatusNotModified:
		// §15.4.5: a 304 repeats the fields a 200 would carry among
		// Cache-Control, Content-Location, Date, ETag, Expires and Vary.
		if hdr.Get("ETag") != fx.etag {
			t.Errorf("304: ETag %q, want %q", hdr.Get("ETag"), fx.etag)
		}
		if hdr.Get("Cache-Control") != fx.cacheControl {
			t.Errorf("304: Cache-Control %q, the 200 sends %q (RFC 9110 §15.4.5)", hdr.Get("Cache-Control"), fx.cacheControl)
		}
		if hdr.Get("Vary") != fx.vary {
			t.Errorf("304: Vary %q, the 200 sends %q", hdr.Get("Vary"), fx.vary)
		}
		if hdr.Get("Date") == "" {
			t.Error("304 without Date")
		}
		if len(body) != 0 {
			t.Errorf("304 with a body: %s", body)
		}
	case got == http.StatusPreconditionFailed:
		if hdr.Get("ETag") != fx.etag {
			t.Errorf("412: ETag %q, want the current %q", hdr.Get("ETag"), fx.etag)
		}
		if hdr.Get("Last-Modified") != lmWant {
			t.Errorf("412: Last-Modified %q, want the current %q", hdr.Get("Last-Modified"), lmWant)
		}
	case got == http.StatusOK && method == "PUT":
		if hdr.Get("ETag") != `"v2"` {
			t.Errorf("PUT 200: ETag %q, want \"v2\"", hdr.Get("ETag"))
		}
		if hdr.Get("Last-Modified") == "" {
			t.Error("PUT 200 without Last-Modified")
		}
	}
	if got >= 400 && hdr.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%d with Content-Type %q", got, hdr.Get("Content-Type"))
	}

	// Read the document back: it changes exactly when the answer is 2xx.
	// A 412 carries the current ETag, checked above against the fixture's:
	// every change raises the version, so it shows one without a read.
	if method == "GET" || got == http.StatusPreconditionFailed {
		return !t.Failed()
	}
	back, b := c.do(t, "GET", "/api/documents/"+fx.id, "", nil)
	success := got >= 200 && got < 300
	changed := false
	switch {
	case back.StatusCode == http.StatusNotFound:
		changed = true
		if method != "DELETE" {
			t.Errorf("document gone after %s", method)
		}
	default:
		d := decodeDoc(t, back, b)
		changed = d.Version != fx.version || d.Body != fx.body
		if changed && method == "PUT" && d.Body != newBody {
			t.Errorf("stored body %q, want %q", d.Body, newBody)
		}
		if changed && method == "DELETE" {
			t.Errorf("DELETE changed the document instead of deleting it")
		}
	}
	if success && !changed {
		t.Errorf("answered %d but the stored document did not change (a write reported that did not happen)", got)
	}
	if !success && changed {
		t.Errorf("answered %d but the stored document changed", got)
	}
	if changed {
		c.newFixture(t)
	}
	return !t.Failed()
}

// conformanceHTTP is the client of the conformance test; its idle
// connections are closed when the server stops.
var conformanceHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// startServe builds the haita binary (with the race detector when the test
// has it) and runs "haita serve" on a free loopback port on a new SQLite
// database; it returns the server's base URL. The server is stopped with
// an interrupt when the test ends.
func startServe(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "haita")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(t.Context(), "go", append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "haita.db"))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`http://\S+`)
		for sc.Scan() {
			if u := re.FindString(sc.Text()); u != "" {
				select {
				case urls <- u:
				default:
				}
			}
		}
		close(urls)
	}()
	t.Cleanup(func() {
		conformanceHTTP.CloseIdleConnections()
		_ = cmd.Process.Signal(os.Interrupt)
		<-drained
		if err := cmd.Wait(); err != nil {
			t.Errorf("haita serve: %v\n%s", err, stderr.String())
		}
	})
	u, ok := <-urls
	if !ok {
		t.Fatalf("haita serve printed no URL:\n%s", stderr.String())
	}
	return u
}
