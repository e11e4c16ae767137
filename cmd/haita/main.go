// Command haita runs the sample application (haita serve) and the race lab
// (haita race). Both are thin over the library: internal/webapp and
// internal/racelab hold the code.
//
// Every subcommand is a row of the table in [commands], implemented in a file
// of its own. "haita help", "haita -h" and "haita <command> -h" print the
// usage on stdout and exit 0.
//
// Exit status:
//
//	0  success
//	1  failure: a server could not be reached, a file not written, a race
//	   lab case ended in an error
//	2  usage: no or an unknown command, an unknown flag, a bad flag value or
//	   argument (the message goes to stderr)
//	3  the race lab ran, and a case's outcome contradicted its kind: a broken
//	   variant without violations, or a fixed variant with some
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes; see the package documentation.
const (
	exitOK           = 0
	exitFailure      = 1
	exitUsage        = 2
	exitContradicted = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// command is a row of the subcommand table.
type command struct {
	name string
	// summary is the command's line in the top-level usage; "" hides the
	// command from the usage and from "haita help".
	summary string
	// run runs the command with the arguments that follow its name. Asked
	// for its usage (-h, --help) it prints it on stdout and returns
	// flag.ErrHelp.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is the table of subcommands, in the order of the usage. A
// function, not a variable: help's row refers to the table itself.
func commands() []command {
	return []command{
		{"serve", "the sample app: optimistic and pessimistic editing in the browser", runServe},
		{"race", "the race lab: every race of docs/techniques.md, broken and fixed, measured", runRace},
		{"version", "the module version and VCS revision this binary was built from", runVersion},
		{"help", "the usage of haita, or of a command", runHelp},
		{"race-worker", "", runRaceWorker}, // a worker process of the race lab
	}
}

// lookup returns the command called name.
func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// run runs the command line args (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return &usageError{usagePrinted: true}
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		printUsage(stdout)
		return nil
	}
	c, ok := lookup(args[0])
	switch {
	case !ok && strings.HasPrefix(args[0], "-"):
		return &usageError{err: fmt.Errorf("unknown flag %s: haita's only flag is -h; the flags of a command follow its name", args[0])}
	case !ok:
		return &usageError{err: fmt.Errorf("unknown command %q", args[0])}
	}
	if err := c.run(ctx, args[1:], stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err
	}
	return nil // the command printed its usage, as asked
}

// printUsage prints the top-level usage, with the commands of the table.
func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString("haita — every layer of concurrency control, done right and proven\n\nUsage:\n  haita <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		if c.summary != "" {
			fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
		}
	}
	b.WriteString(`
Run "haita help <command>" or "haita <command> -h" for the flags of a command.

Exit status: 0 success; 1 failure (a server cannot be reached, a lab case
ended in an error); 2 usage error; 3 a race lab outcome contradicted its kind.
`)
	io.WriteString(w, b.String())
}

// usageError is a mistake in the command line: unknown command or flag, bad
// flag value or argument. Its exit code is 2.
type usageError struct {
	cmd string // the command whose line it is, "" for haita's own
	err error  // what is wrong
	// usagePrinted says the usage has been printed instead of a message.
	usagePrinted bool
}

func (e *usageError) Error() string {
	if e.err == nil {
		return "usage"
	}
	return e.err.Error()
}

func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usageError of command cmd.
func usageErrorf(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// errContradicted is matched by the error of a race lab run in which a
// case's outcome contradicted its kind.
var errContradicted = errors.New("an outcome contradicted its kind")

// exitCode prints err, if any, on stderr and returns the exit code for it.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		if ue.usagePrinted {
			return exitUsage
		}
		name, help := "haita", "haita help"
		if ue.cmd != "" {
			name, help = "haita "+ue.cmd, "haita help "+ue.cmd
		}
		fmt.Fprintf(stderr, "%s: %v\nRun %q for usage.\n", name, ue.err, help)
		return exitUsage
	case errors.Is(err, errContradicted):
		fmt.Fprintf(stderr, "haita: %v\n", err)
		return exitContradicted
	default:
		fmt.Fprintf(stderr, "haita: %v\n", err)
		return exitFailure
	}
}

// parseFlags parses the flags of command fs.Name() from args, and allows at
// most maxArgs arguments after them. Asked for the usage (-h, --help) it
// prints fs's usage on stdout and returns flag.ErrHelp; a mistake is a
// *usageError, which main prints once.
func parseFlags(fs *flag.FlagSet, args []string, maxArgs int, stdout io.Writer) error {
	fs.SetOutput(io.Discard) // the flag package would print the error and the usage on its own
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return flag.ErrHelp
	case err != nil:
		return usageErrorf(fs.Name(), "%v", err)
	case fs.NArg() > maxArgs:
		return usageErrorf(fs.Name(), "unexpected argument %q", fs.Arg(maxArgs))
	}
	return nil
}

// usageFunc returns a FlagSet's Usage that prints head, then the flags (if
// any), on the FlagSet's output.
func usageFunc(fs *flag.FlagSet, head string) func() {
	return func() {
		w := fs.Output()
		io.WriteString(w, head)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			io.WriteString(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
}
