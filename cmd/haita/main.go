// Command haita runs the sample application (haita serve) and the race lab
// (haita race). Both are thin over the library: internal/webapp and
// internal/racelab hold the code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "haita:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "haita:", err)
		os.Exit(1)
	}
}

// errUsage marks errors in the command line.
var errUsage = errors.New("usage")

const usage = `haita — every layer of concurrency control, done right and proven

Usage:
  haita serve [flags]   the sample app: optimistic and pessimistic editing in the browser
  haita race [flags]    the race lab: every race of the seeds, broken and fixed, measured

Run "haita <command> -h" for the flags of a command.
`

// commands maps each subcommand to its runner; one file per subcommand.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr)
}
