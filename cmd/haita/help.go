package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

const helpUsage = `Usage: haita help [command]

Prints the usage of haita, or of the command named.
`

// runHelp prints the top-level usage, or with a command's name that
// command's usage (what "haita <command> -h" prints).
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("help", flag.ContinueOnError)
	fs.Usage = usageFunc(fs, helpUsage)
	if err := parseFlags(fs, args, 1, stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		printUsage(stdout)
		return nil
	}
	c, ok := lookup(fs.Arg(0))
	if !ok || c.summary == "" {
		return &usageError{err: fmt.Errorf("unknown command %q", fs.Arg(0))}
	}
	return c.run(ctx, []string{"-h"}, stdout, stderr)
}
