package election_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeSnippet checks that the README's election snippet is the body
// of leadScheduler in example_test.go, which the compiler checks.
func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "## Leader election\n\n```go\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no Go block under \"## Leader election\"")
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(example), "func leadScheduler(")
	_, body, ok2 = strings.Cut(body, "{\n")
	body, _, ok3 := strings.Cut(body, "\n}\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("example_test.go has no func leadScheduler")
	}
	var want strings.Builder
	for line := range strings.Lines(body + "\n") {
		want.WriteString(strings.TrimPrefix(line, "\t"))
	}
	if block != want.String() {
		t.Errorf("README snippet differs from leadScheduler's body:\n--- README\n%s--- example_test.go\n%s", block, want.String())
	}
}
