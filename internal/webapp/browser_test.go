package webapp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haita/haita/internal/testserver"
)

const chromiumPath = "/usr/bin/chromium"

// newBrowser starts headless Chromium with a fresh profile and returns a
// function that opens a new browser context (own cookies, like a separate
// browser) as a chromedp context.
func newBrowser(t *testing.T) func() context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if testserver.Required() {
			t.Fatalf("chromium not installed (%v); apt-get install chromium", err)
		}
		t.Skipf("chromium not installed (%v); apt-get install chromium", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return func() context.Context {
		ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		if err := chromedp.Do(ctx); err != nil { // the tab lives as long as this call's context
			t.Fatalf("open a browser context: %v", err)
		}
		return ctx
	}
}

// run runs actions with a timeout and fails the test with what step.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// value runs one action that returns a value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

type css = chromedp.CSS

func signInActions(base, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(css(`input[name=name]`)),
		chromedp.SendKeys(css(`input[name=name]`), name),
		chromedp.SendKeys(css(`input[name=password]`), name),
		chromedp.Click(css(`button[type=submit]`)),
		chromedp.WaitVisible(css(`ul.docs`)),
	)
}

// screenshot saves the viewport as serve-<name>.png in
// $HAITA_SERVE_SCREENSHOTS (docs/img when refreshing the README's
// images), or in the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("HAITA_SERVE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	png := value(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	path := filepath.Join(dir, "serve-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// TestBrowser drives the app in headless Chromium: two users in two
// browser contexts hit an optimistic conflict and resolve it by merging;
// one user is blocked by another's checkout, which the admin breaks, and
// the former holder's page says so.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	ta := newTestApp(t, "")
	base := ta.srv.URL
	open := newBrowser(t)
	alice, bob, admin := open(), open(), open()
	run(t, alice, "alice signs in", signInActions(base, "alice"))
	run(t, bob, "bob signs in", signInActions(base, "bob"))
	run(t, admin, "admin signs in", signInActions(base, "admin"))

	t.Run("optimistic conflict", func(t *testing.T) {
		run(t, alice, "alice edits", chromedp.Navigate(base+"/docs/price-list/edit"), chromedp.WaitVisible(css(`textarea[name=body]`)))
		run(t, bob, "bob edits", chromedp.Navigate(base+"/docs/price-list/edit"), chromedp.WaitVisible(css(`textarea[name=body]`)))
		run(t, alice, "alice saves",
			chromedp.SetValue(css(`textarea[name=body]`), "Coffee 3.50\nTea 2.80\nCake 4.50\nSandwich 6.00\n"),
			chromedp.Click(css(`#save`)),
			chromedp.WaitVisible(css(`.flash.ok`)))
		// Bob's editor learns of alice's save through the event stream.
		run(t, bob, "bob sees the notice", chromedp.WaitVisible(css(`#stale`)))
		run(t, bob, "bob saves", chromedp.SetValue(css(`textarea[name=body]`), "Coffee 3.20\nTea 3.10\nCake 4.50\nSandwich 6.00\nSoup 5.00\n"),
			chromedp.Click(css(`#save`)), chromedp.WaitVisible(css(`.diff`)))
		page := value(t, bob, "read conflict page", chromedp.Text(css(`.conflict`)))
		if !strings.Contains(page, "Someone saved first") || !strings.Contains(page, "Coffee 3.50") || !strings.Contains(page, "Soup 5.00") {
			t.Fatalf("conflict page: %s", page)
		}
		screenshot(t, bob, "conflict")
		const merged = "Coffee 3.50\nTea 3.10\nCake 4.50\nSandwich 6.00\nSoup 5.00\n"
		run(t, bob, "bob merges", chromedp.SetValue(css(`#merge-text`), merged), chromedp.Click(css(`#save-merge`)), chromedp.WaitVisible(css(`.flash.ok`)))
		// Alice's page (the document after her save) updates live.
		run(t, alice, "alice sees version 3", chromedp.Poll[chromedp.Void](`document.querySelector('.doc-page [data-f=version]').textContent === "3"`, chromedp.WithPollingTimeout(10*time.Second)))
		body := value(t, alice, "alice reads", chromedp.Text(css(`pre.body`)))
		if strings.TrimSpace(body) != strings.TrimSpace(merged) {
			t.Fatalf("alice's page shows %q", body)
		}
	})

	t.Run("checkout broken by admin", func(t *testing.T) {
		run(t, alice, "alice checks out", chromedp.Navigate(base+"/docs/contract/edit"), chromedp.WaitVisible(css(`#holding`)))
		run(t, bob, "bob opens the document", chromedp.Navigate(base+"/docs/contract"), chromedp.WaitVisible(css(`.doc-page .banner`)))
		banner := value(t, bob, "read banner", chromedp.Text(css(`.doc-page .banner`)))
		if !strings.Contains(banner, "Being edited by alice since") || !strings.Contains(banner, "at the latest") {
			t.Fatalf("banner %q", banner)
		}
		// The page offers bob no checkout of a document alice holds; the
		// editor's address sends him back with a notice.
		run(t, bob, "no edit button", chromedp.WaitNotVisible(css(`#edit`)))
		run(t, bob, "bob tries to edit", chromedp.Navigate(base+"/docs/contract/edit"), chromedp.WaitVisible(css(`.flash.warn`)))
		screenshot(t, bob, "checkout")
		run(t, admin, "admin breaks", chromedp.Navigate(base+"/docs/contract"), chromedp.WaitVisible(css(`#break`)),
			chromedp.SendKeys(css(`input[name=reason]`), "Alice is on holiday"), chromedp.Click(css(`#break`)), chromedp.WaitVisible(css(`.flash.ok`)))
		run(t, alice, "alice is told", chromedp.WaitVisible(css(`#lost`)))
		lost := value(t, alice, "read notice", chromedp.Text(css(`#lost`)))
		if !strings.Contains(lost, "admin broke your checkout: Alice is on holiday") {
			t.Fatalf("alice's notice %q", lost)
		}
		screenshot(t, alice, "broken")
		// The banner disappears for bob without a reload, and he can edit.
		run(t, bob, "banner gone", chromedp.WaitNotVisible(css(`.doc-page .banner`)))
		run(t, bob, "bob edits", chromedp.WaitVisible(css(`#edit`)), chromedp.Click(css(`#edit`)), chromedp.WaitVisible(css(`#holding`)))
		// Leaving the page releases the checkout (navigator.sendBeacon).
		run(t, bob, "bob leaves", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css(`ul.docs`)))
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, held, err := ta.co.Get(t.Context(), "contract"); err != nil {
				t.Fatal(err)
			} else if !held {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("leaving the editing page did not release the checkout")
			}
			time.Sleep(50 * time.Millisecond)
		}
		screenshot(t, bob, "list")
	})
}
