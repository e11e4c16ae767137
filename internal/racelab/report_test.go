package racelab_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haita/haita/internal/racelab"
	"github.com/haita/haita/internal/testserver"
)

// screenshotPath is where the report's screenshot goes: a temporary
// directory, or docs/img/race-report.png with HAITA_RACE_SCREENSHOT=docs so
// that a test run never changes the repository by itself.
func screenshotPath(t *testing.T) string {
	if os.Getenv("HAITA_RACE_SCREENSHOT") == "docs" {
		return "../../docs/img/race-report.png"
	}
	return filepath.Join(t.TempDir(), "race-report.png")
}

// checkReport renders results as HTML, checks that the page is
// self-contained, opens it in headless Chromium, checks what the browser
// drew and keeps a screenshot.
func checkReport(t *testing.T, results []racelab.Result) {
	t.Helper()
	var buf bytes.Buffer
	meta := racelab.ReportMeta{Command: "haita race", Started: time.Now(), Elapsed: time.Minute}
	if err := racelab.WriteHTML(&buf, results, meta); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, external := range []string{"<script", "src=", "href=\"http", "@import", "url("} {
		if strings.Contains(page, external) {
			t.Errorf("report is not self-contained: it contains %q", external)
		}
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if testserver.Required() {
			t.Fatalf("chromium is not installed (Debian package chromium): %v", err)
		}
		t.Skipf("chromium is not installed (Debian package chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	defer cancelT()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(chromedp.CSS("section"))); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg").length`))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("section table tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[int](`[...document.querySelectorAll("svg rect")].filter(r => r.getBoundingClientRect().width > 1).length`))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if title != "haita race lab report" {
		t.Errorf("title %q", title)
	}
	scenarios := map[int]bool{}
	sweep := false
	for _, r := range results {
		scenarios[r.ScenarioID] = true
		sweep = sweep || r.Sweep
	}
	wantCharts := 2 * len(scenarios)
	if sweep {
		wantCharts += 3
	}
	if charts != wantCharts {
		t.Errorf("%d charts drawn, want %d", charts, wantCharts)
	}
	if rows < len(results) {
		t.Errorf("%d table rows for %d results", rows, len(results))
	}
	if bars < len(results)/2 {
		t.Errorf("only %d visible bars for %d results", bars, len(results))
	}
	if len(png) < 10000 {
		t.Fatalf("screenshot of %d bytes", len(png))
	}
	screenshot := screenshotPath(t)
	if err := os.MkdirAll(filepath.Dir(screenshot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(screenshot, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
