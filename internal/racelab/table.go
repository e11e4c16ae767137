package racelab

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable writes results as a plain-text table, one row per case, the
// sweep apart, followed by a verdict line per result that contradicts its
// kind.
func WriteTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSCENARIO\tVARIANT\tKIND\tENGINE\tMODE\tWORKERS\tOPS\tVIOLATIONS\tOPS/S\tRETRIES\tWAIT P50\tWAIT P99\t")
	last := 0
	for _, r := range results {
		if r.Sweep {
			continue
		}
		id := ""
		if r.ScenarioID != last {
			id = fmt.Sprint(r.ScenarioID)
			last = r.ScenarioID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.0f\t%d\t%s\t%s\t\n",
			id, r.Scenario, r.Variant, r.Kind, r.Engine, r.Mode, r.Workers, r.Ops, verdict(r),
			r.OpsPerSec, r.Retries, fmtMs(r.WaitP50ms), fmtMs(r.WaitP99ms))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var sweep []Result
	for _, r := range results {
		if r.Sweep {
			sweep = append(sweep, r)
		}
	}
	if len(sweep) > 0 {
		fmt.Fprintf(w, "\nContention sweep (scenario 3 on %s): throughput and retries as workers grow\n", sweep[0].Engine)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VARIANT\tWORKERS\tOPS\tVIOLATIONS\tOPS/S\tRETRIES\tRETRIES/OP\tWAIT P50\tWAIT P99\t")
		for _, r := range sweep {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%d\t%.2f\t%s\t%s\t\n", r.Variant, r.Workers, r.Ops, r.Violations,
				r.OpsPerSec, r.Retries, perOp(r), fmtMs(r.WaitP50ms), fmtMs(r.WaitP99ms))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var bad []string
	for _, r := range results {
		if r.Failed() {
			msg := fmt.Sprintf("  %d %s / %s on %s: %s variant with %d violations", r.ScenarioID, r.Scenario, r.Variant, r.Engine, r.Kind, r.Violations)
			if r.Error != "" {
				msg += ": error: " + r.Error
			}
			bad = append(bad, msg)
		}
	}
	broken, fixed := 0, 0
	for _, r := range results {
		if r.Kind == Broken {
			broken++
		} else {
			fixed++
		}
	}
	if len(bad) == 0 {
		_, err := fmt.Fprintf(w, "\nAll %d broken variants violated their invariant; all %d fixed variants kept it.\n", broken, fixed)
		return err
	}
	_, err := fmt.Fprintf(w, "\nUnexpected outcomes:\n%s\n", strings.Join(bad, "\n"))
	return err
}

func perOp(r Result) float64 {
	if r.Ops == 0 {
		return 0
	}
	return float64(r.Retries) / float64(r.Ops)
}

// verdict renders the violations column: the count and a mark when it
// matches the kind's expectation.
func verdict(r Result) string {
	switch {
	case r.Error != "":
		return fmt.Sprintf("%d ERROR", r.Violations)
	case r.Kind == Broken && r.Violations > 0:
		return fmt.Sprintf("%d ✗", r.Violations)
	case r.Kind == Fixed && r.Violations == 0:
		return "0 ✓"
	}
	return fmt.Sprintf("%d !", r.Violations)
}

func fmtMs(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 1:
		return fmt.Sprintf("%.2fms", v)
	case v < 100:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}
