package main

import (
	"context"
	"io"
	"os"

	"github.com/haita/haita/internal/racelab"
)

// runRaceWorker is a worker process of the race lab: "haita race" starts the
// binary again as "haita race-worker <worker> [flags]" for the scenarios that
// need several OS processes. It is no command for people, so the usage does
// not list it.
func runRaceWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return racelab.RunWorker(ctx, args, os.Stdin, stdout)
}
