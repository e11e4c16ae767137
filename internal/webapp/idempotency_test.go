package webapp

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// docsTitled counts the documents with the given title.
func docsTitled(t *testing.T, ta *testApp, title string) int {
	t.Helper()
	docs, err := ta.listDocs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range docs {
		if d.Title == title {
			n++
		}
	}
	return n
}

// TestBrowserDoubleSubmit: the "New document" form carries an idempotency
// key, so a double click on Create, and the same form posted again (three
// times at once and once more after), create one document.
func TestBrowserDoubleSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	ta := newTestApp(t, "")
	base := ta.srv.URL
	alice := newBrowser(t)()
	run(t, alice, "alice signs in", signInActions(base, "alice"))

	run(t, alice, "alice double-clicks Create",
		chromedp.Navigate(base+"/"),
		chromedp.Click(css(`details.new summary`)),
		chromedp.SendKeys(css(`form[action="/docs"] input[name=title]`), "Double click"),
		chromedp.DoubleClick(css(`form[action="/docs"] button[type=submit]`)),
		chromedp.WaitVisible(css(`.flash.ok`)))
	if n := docsTitled(t, ta, "Double click"); n != 1 {
		t.Fatalf("double click created %d documents; want 1", n)
	}

	run(t, alice, "alice fills the form again",
		chromedp.Navigate(base+"/"),
		chromedp.Click(css(`details.new summary`)),
		chromedp.SendKeys(css(`form[action="/docs"] input[name=title]`), "Resubmitted"))
	urls := value(t, alice, "the form is posted three times at once, then once more", chromedp.Evaluate[[]string](`(async () => {
		const f = document.querySelector('form[action="/docs"]');
		const body = () => new URLSearchParams(new FormData(f));
		const post = () => fetch('/docs', {method: 'POST', body: body()}).then(r => r.url);
		const first = await Promise.all([post(), post(), post()]);
		return [...first, await post()];
	})()`, chromedp.EvalAwaitPromise))
	if len(urls) != 4 {
		t.Fatalf("answers %q", urls)
	}
	for _, u := range urls {
		if u != urls[0] || !strings.Contains(u, "/docs/resubmitted") {
			t.Errorf("posts landed on %q; want all on the one document's page", urls)
			break
		}
	}
	if n := docsTitled(t, ta, "Resubmitted"); n != 1 {
		t.Fatalf("the resubmitted form created %d documents; want 1", n)
	}
}
