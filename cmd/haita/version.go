package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"runtime/debug"
	"strings"
)

const versionUsage = `Usage: haita version

Prints the module version and the VCS revision this binary was built from,
as the Go toolchain recorded them in the binary.
`

// runVersion prints the build's module version and VCS revision.
func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = usageFunc(fs, versionUsage)
	if err := parseFlags(fs, args, 0, stdout); err != nil {
		return err
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("version: the binary carries no build information")
	}
	_, err := io.WriteString(stdout, versionText(bi))
	return err
}

// versionText formats what "haita version" prints from the build information:
//
//	haita v1.2.3
//	module github.com/haita/haita
//	revision 0123abcd… (committed 2026-01-02T03:04:05Z, with uncommitted changes)
//
// The module version is "(devel)" for a binary built inside the module's own
// checkout by a Go older than 1.24; the revision is unknown for one built
// without VCS information (go test, go run, -buildvcs=false).
func versionText(bi *debug.BuildInfo) string {
	setting := func(key string) string {
		for _, s := range bi.Settings {
			if s.Key == key {
				return s.Value
			}
		}
		return ""
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var b strings.Builder
	b.WriteString("haita " + version + "\n")
	if bi.Main.Path != "" {
		b.WriteString("module " + bi.Main.Path + "\n")
	}
	b.WriteString("revision ")
	rev := setting("vcs.revision")
	if rev == "" {
		b.WriteString("unknown: built without VCS information\n")
		return b.String()
	}
	b.WriteString(rev)
	var notes []string
	if t := setting("vcs.time"); t != "" {
		notes = append(notes, "committed "+t)
	}
	if setting("vcs.modified") == "true" {
		notes = append(notes, "with uncommitted changes")
	}
	if len(notes) > 0 {
		b.WriteString(" (" + strings.Join(notes, ", ") + ")")
	}
	b.WriteString("\n")
	return b.String()
}
