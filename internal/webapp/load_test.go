package webapp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haita/haita/httpcc"
)

// The load test runs the server in this process and the clients in a
// second one: the test binary run again with HAITA_LOAD_URL set, running
// TestLoadClient only, which writes its results as JSON to HAITA_LOAD_OUT.

// loadResult is one PUT of the load client.
type loadResult struct {
	Status  int    `json:"status"`
	ETag    string `json:"etag"`   // the response's ETag
	Base    string `json:"base"`   // the If-Match it sent
	Body    string `json:"body"`   // what it tried to write
	Latency int64  `json:"lat_ns"` // PUT round trip
}

type loadReport struct {
	Results []loadResult `json:"results"`
	Elapsed int64        `json:"elapsed_ns"`
	Errors  []string     `json:"errors"`
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestLoadClient is the client side of TestServeLoad; it does nothing
// unless started by it.
func TestLoadClient(t *testing.T) {
	base := os.Getenv("HAITA_LOAD_URL")
	if base == "" {
		t.Skip("run by TestServeLoad in a second process")
	}
	clients, ops := envInt("HAITA_LOAD_CLIENTS", 16), envInt("HAITA_LOAD_OPS", 40)
	doc := os.Getenv("HAITA_LOAD_DOC")
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var (
		mu  sync.Mutex
		rep loadReport
		wg  sync.WaitGroup
	)
	req := func(method, etag, body string) (*http.Response, []byte, error) {
		r, _ := http.NewRequest(method, base+"/api/documents/"+doc, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+DemoToken("bob"))
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		if etag != "" {
			r.Header.Set("If-Match", etag)
		}
		resp, err := hc.Do(r)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			var local []loadResult
			var errs []string
			for i := range ops {
				resp, _, err := req("GET", "", "")
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				etag := resp.Header.Get("ETag")
				text := fmt.Sprintf("client %d write %d", c, i)
				body, _ := json.Marshal(map[string]string{"body": text})
				t0 := time.Now()
				resp, _, err = req("PUT", etag, string(body))
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				local = append(local, loadResult{Status: resp.StatusCode, ETag: resp.Header.Get("ETag"), Base: etag, Body: text, Latency: int64(time.Since(t0))})
			}
			mu.Lock()
			rep.Results = append(rep.Results, local...)
			rep.Errors = append(rep.Errors, errs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	rep.Elapsed = int64(time.Since(start))
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(os.Getenv("HAITA_LOAD_OUT"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestServeLoad runs many clients in a second process, over loopback TCP,
// doing read-then-PUT with If-Match on one optimistic document. Every
// accepted write must raise the version by exactly one (the accepted ETags
// are exactly v2..vN, each once, each one more than the If-Match it sent),
// every rejected one must be a 412, and the document must end holding the
// text of the write that made the last version.
func TestServeLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	engines := append([]struct {
		name string
		open func(t testing.TB) string
	}{{"sqlite", func(testing.TB) string { return "" }}}, serverDBs...)
	for _, e := range engines {
		engine := e.name
		t.Run(engine, func(t *testing.T) {
			ta := newTestApp(t, e.open(t))
			clients, ops := envInt("HAITA_LOAD_CLIENTS", 16), envInt("HAITA_LOAD_OPS", 40)
			out := t.TempDir() + "/load.json"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestLoadClient$", "-test.count=1")
			cmd.Env = append(os.Environ(), "HAITA_LOAD_URL="+ta.srv.URL, "HAITA_LOAD_OUT="+out, "HAITA_LOAD_DOC=price-list",
				fmt.Sprintf("HAITA_LOAD_CLIENTS=%d", clients), fmt.Sprintf("HAITA_LOAD_OPS=%d", ops))
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("load client: %v\n%s", err, b)
			}
			var rep loadReport
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Errors) > 0 {
				t.Fatalf("%d transport errors, first: %s", len(rep.Errors), rep.Errors[0])
			}
			if len(rep.Results) != clients*ops {
				t.Fatalf("%d results, want %d", len(rep.Results), clients*ops)
			}
			var accepted []loadResult
			rejected := 0
			lat := make([]time.Duration, 0, len(rep.Results))
			for _, r := range rep.Results {
				lat = append(lat, time.Duration(r.Latency))
				switch r.Status {
				case http.StatusOK:
					base, err1 := httpcc.ParseVersion(r.Base)
					got, err2 := httpcc.ParseVersion(r.ETag)
					if err1 != nil || err2 != nil || got != base+1 {
						t.Errorf("accepted write from %s answered ETag %s: not exactly one more", r.Base, r.ETag)
					}
					accepted = append(accepted, r)
				case http.StatusPreconditionFailed:
					if r.ETag == "" || r.ETag == r.Base {
						t.Errorf("412 with ETag %q for If-Match %s", r.ETag, r.Base)
					}
					rejected++
				default:
					t.Errorf("status %d", r.Status)
				}
			}
			versions := make([]int64, len(accepted))
			for i, r := range accepted {
				versions[i], _ = httpcc.ParseVersion(r.ETag)
			}
			slices.Sort(versions)
			for i, v := range versions {
				if v != int64(i)+2 {
					t.Fatalf("accepted versions are not exactly 2..%d: %v", len(versions)+1, versions)
				}
			}
			final := ta.call(t, "alice", "GET", "/api/documents/price-list", "").json(t)
			last := accepted[len(accepted)-1]
			for _, r := range accepted {
				if v, _ := httpcc.ParseVersion(r.ETag); v == versions[len(versions)-1] {
					last = r
				}
			}
			if final["version"] != float64(len(accepted)+1) || final["body"] != last.Body {
				t.Fatalf("final document v%v %q; want v%d %q", final["version"], final["body"], len(accepted)+1, last.Body)
			}
			slices.Sort(lat)
			pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
			el := time.Duration(rep.Elapsed)
			t.Logf("%s: %d clients x %d read+PUT: %d accepted, %d rejected with 412, 0 lost; %.0f PUT/s, %.0f accepted/s; PUT latency p50 %v p99 %v max %v",
				engine, clients, ops, len(accepted), rejected, float64(len(rep.Results))/el.Seconds(), float64(len(accepted))/el.Seconds(),
				pct(.5).Round(10*time.Microsecond), pct(.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
		})
	}
}
