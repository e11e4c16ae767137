package webapp

import "strings"

// diffOp is one line of a line diff.
type diffOp struct {
	Kind byte // '=' in both, '-' only in a (theirs), '+' only in b (yours)
	Text string
}

// maxDiffCells bounds the LCS table; larger inputs diff as one replaced
// block.
const maxDiffCells = 4_000_000

// lineDiff returns a line diff from a to b by longest common subsequence.
func lineDiff(a, b string) []diffOp {
	x, y := splitLines(a), splitLines(b)
	// Common prefix and suffix cost nothing.
	pre := 0
	for pre < len(x) && pre < len(y) && x[pre] == y[pre] {
		pre++
	}
	suf := 0
	for suf < len(x)-pre && suf < len(y)-pre && x[len(x)-1-suf] == y[len(y)-1-suf] {
		suf++
	}
	var ops []diffOp
	for _, l := range x[:pre] {
		ops = append(ops, diffOp{'=', l})
	}
	mx, my := x[pre:len(x)-suf], y[pre:len(y)-suf]
	if (len(mx)+1)*(len(my)+1) > maxDiffCells {
		for _, l := range mx {
			ops = append(ops, diffOp{'-', l})
		}
		for _, l := range my {
			ops = append(ops, diffOp{'+', l})
		}
	} else {
		ops = append(ops, lcsDiff(mx, my)...)
	}
	for _, l := range x[len(x)-suf:] {
		ops = append(ops, diffOp{'=', l})
	}
	return ops
}

func lcsDiff(x, y []string) []diffOp {
	n, m := len(x), len(y)
	// l[i][j] is the LCS length of x[i:] and y[j:].
	l := make([][]int32, n+1)
	for i := range l {
		l[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var ops []diffOp
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case x[i] == y[j]:
			ops = append(ops, diffOp{'=', x[i]})
			i++
			j++
		case l[i+1][j] >= l[i][j+1]:
			ops = append(ops, diffOp{'-', x[i]})
			i++
		default:
			ops = append(ops, diffOp{'+', y[j]})
			j++
		}
	}
	for ; i < n; i++ {
		ops = append(ops, diffOp{'-', x[i]})
	}
	for ; j < m; j++ {
		ops = append(ops, diffOp{'+', y[j]})
	}
	return ops
}

func splitLines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// sideRow is one row of the side-by-side view: the left (theirs) and right
// (yours) cells; a nil side is an empty cell.
type sideRow struct {
	Left, Right *string
	Changed     bool
}

// sideBySide pairs the removed and added lines of each changed block.
func sideBySide(ops []diffOp) []sideRow {
	var rows []sideRow
	for i := 0; i < len(ops); {
		if ops[i].Kind == '=' {
			t := ops[i].Text
			rows = append(rows, sideRow{Left: &t, Right: &t})
			i++
			continue
		}
		var del, add []string
		for ; i < len(ops) && ops[i].Kind != '='; i++ {
			if ops[i].Kind == '-' {
				del = append(del, ops[i].Text)
			} else {
				add = append(add, ops[i].Text)
			}
		}
		for k := 0; k < max(len(del), len(add)); k++ {
			r := sideRow{Changed: true}
			if k < len(del) {
				r.Left = &del[k]
			}
			if k < len(add) {
				r.Right = &add[k]
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// mergeDraft is the starting point for merging by hand: common lines once,
// each differing block as both versions between conflict markers.
func mergeDraft(ops []diffOp, theirs string) string {
	var b strings.Builder
	for i := 0; i < len(ops); {
		if ops[i].Kind == '=' {
			b.WriteString(ops[i].Text + "\n")
			i++
			continue
		}
		var del, add []string
		for ; i < len(ops) && ops[i].Kind != '='; i++ {
			if ops[i].Kind == '-' {
				del = append(del, ops[i].Text)
			} else {
				add = append(add, ops[i].Text)
			}
		}
		b.WriteString("<<<<<<< " + theirs + "\n")
		for _, l := range del {
			b.WriteString(l + "\n")
		}
		b.WriteString("=======\n")
		for _, l := range add {
			b.WriteString(l + "\n")
		}
		b.WriteString(">>>>>>> yours\n")
	}
	return b.String()
}
