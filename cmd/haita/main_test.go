package main

import (
	"os"
	"testing"

	"github.com/haita/haita/internal/testserver"
)

// asMain makes the test binary run as haita itself: the CLI tests start it
// with this variable set and the command line to run (see runHaita), and the
// race lab's worker processes, started from such a run, inherit it.
const asMain = "HAITA_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main() // exits
	}
	testserver.Main(m)
}
