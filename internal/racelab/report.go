package racelab

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// ReportMeta describes the run a report shows.
type ReportMeta struct {
	// Command is the command line that produced the results.
	Command string
	Started time.Time
	Elapsed time.Duration
}

// WriteHTML writes a self-contained HTML page (inline CSS and SVG, no
// scripts, nothing fetched) with, per scenario, the violations and the
// throughput of every variant, and the contention sweep's throughput and
// retries as workers grow.
func WriteHTML(w io.Writer, results []Result, meta ReportMeta) error {
	type scenarioView struct {
		ID                     int
		Title, Seeds, Unit     string
		Violations, Throughput template.HTML
		Rows                   []Result
	}
	var views []scenarioView
	var sweep []Result
	broken, fixed, bad := 0, 0, 0
	for _, r := range results {
		if r.Sweep {
			sweep = append(sweep, r)
			continue
		}
		if r.Kind == Broken {
			broken++
		} else {
			fixed++
		}
		if r.Failed() {
			bad++
		}
		if len(views) == 0 || views[len(views)-1].ID != r.ScenarioID {
			views = append(views, scenarioView{ID: r.ScenarioID, Title: r.Title, Seeds: r.Seeds, Unit: r.ViolationUnit})
		}
		v := &views[len(views)-1]
		v.Rows = append(v.Rows, r)
	}
	for i := range views {
		v := &views[i]
		v.Violations = barChart(v.Rows, "violations ("+v.Unit+")", func(r Result) float64 { return float64(r.Violations) }, "%.0f", true)
		v.Throughput = barChart(v.Rows, "throughput (operations/s)", func(r Result) float64 { return r.OpsPerSec }, "%.0f", false)
	}
	data := map[string]any{
		"Meta":      meta,
		"When":      meta.Started.Format("2006-01-02 15:04"),
		"Elapsed":   meta.Elapsed.Round(100 * time.Millisecond).String(),
		"Machine":   fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()),
		"Scenarios": views,
		"Broken":    broken,
		"Fixed":     fixed,
		"Bad":       bad,
		"Window":    windowOf(results),
		"Sweep":     len(sweep) > 0,
	}
	if len(sweep) > 0 {
		data["SweepEngine"] = sweep[0].Engine
		data["SweepThroughput"] = lineChart(sweep, "throughput (operations/s)", func(r Result) float64 { return r.OpsPerSec })
		data["SweepRetries"] = lineChart(sweep, "retries per operation", perOp)
		data["SweepWait"] = lineChart(sweep, "p99 wait (ms)", func(r Result) float64 { return r.WaitP99ms })
		data["SweepRows"] = sweep
	}
	return reportTmpl.Execute(w, data)
}

func windowOf(rs []Result) string {
	if len(rs) == 0 {
		return ""
	}
	return fmtMs(rs[0].WindowMs)
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":      fmtMs,
	"verdict": verdict,
	"perop":   perOp,
	"failed":  func(r Result) bool { return r.Failed() },
	"f0":      func(v float64) string { return fmt.Sprintf("%.0f", v) },
	"f2":      func(v float64) string { return fmt.Sprintf("%.2f", v) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>haita race lab report</title>
<style>
:root{--broken:#d64545;--fixed:#2f9e5b;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:28px 40px}
header h1{margin:0 0 4px;font-size:26px} header p{margin:2px 0;color:#c9cfdb}
header code{background:#2c3445;padding:2px 6px;border-radius:4px;color:#fff}
main{padding:24px 40px;max-width:1500px}
.summary{display:flex;gap:16px;margin:0 0 24px;flex-wrap:wrap}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;min-width:180px}
.card b{display:block;font-size:28px}
.card.ok b{color:var(--fixed)} .card.bad b{color:var(--broken)}
section{background:#fff;border:1px solid var(--line);border-radius:12px;padding:18px 22px;margin:0 0 22px}
section h2{margin:0 0 2px;font-size:19px} .seeds{color:var(--muted);font-size:13px;margin:0 0 12px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:18px}
.charts3{display:grid;grid-template-columns:1fr 1fr 1fr;gap:18px}
svg{width:100%;height:auto;font:12px system-ui,sans-serif}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:10px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{color:var(--muted);font-weight:600} td.l,th.l{text-align:left}
td.detail{text-align:left;white-space:normal;color:var(--muted)}
.broken{color:var(--broken)} .fixed{color:var(--fixed)} .bad{background:#fff1f0}
.legend span{display:inline-block;margin-right:14px} .sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
</style></head><body>
<header><h1>haita race lab</h1>
<p>Every race of haita's technique list (docs/techniques.md), reproduced broken and fixed, measured on this machine.</p>
<p><code>{{.Meta.Command}}</code> · {{.When}} · {{.Elapsed}} · {{.Machine}}</p>
<p>Race windows widened on purpose: workers sleep {{.Window}} between read and write.</p></header>
<main>
<div class="summary">
<div class="card bad"><b>{{.Broken}}</b>broken variants run</div>
<div class="card ok"><b>{{.Fixed}}</b>fixed variants run</div>
<div class="card {{if .Bad}}bad{{else}}ok{{end}}"><b>{{.Bad}}</b>unexpected outcomes</div>
<div class="card legend"><span><i class="sw" style="background:var(--broken)"></i>broken</span><span><i class="sw" style="background:var(--fixed)"></i>fixed</span></div>
</div>
{{if .Sweep}}<section id="sweep"><h2>Optimistic vs pessimistic vs atomic as contention grows</h2>
<p class="seeds">Scenario 3 (lost update on one row) on {{.SweepEngine}}: every worker increments the same row. S19: integrity first → row lock; low contention → optimistic; atomic update whenever the change fits in one statement.</p>
<div class="charts3"><div>{{.SweepThroughput}}</div><div>{{.SweepRetries}}</div><div>{{.SweepWait}}</div></div>
<table><tr><th class="l">variant</th><th>workers</th><th>ops</th><th>violations</th><th>ops/s</th><th>retries</th><th>retries/op</th><th>p50 wait</th><th>p99 wait</th></tr>
{{range .SweepRows}}<tr><td class="l">{{.Variant}}</td><td>{{.Workers}}</td><td>{{.Ops}}</td><td>{{.Violations}}</td><td>{{f0 .OpsPerSec}}</td><td>{{.Retries}}</td><td>{{f2 (perop .)}}</td><td>{{ms .WaitP50ms}}</td><td>{{ms .WaitP99ms}}</td></tr>
{{end}}</table></section>{{end}}
{{range .Scenarios}}<section id="s{{.ID}}"><h2>{{.ID}}. {{.Title}}</h2><p class="seeds">Techniques {{.Seeds}} · violations counted as {{.Unit}}</p>
<div class="charts"><div>{{.Violations}}</div><div>{{.Throughput}}</div></div>
<table><tr><th class="l">variant</th><th class="l">kind</th><th class="l">engine</th><th class="l">mode</th><th>workers</th><th>ops</th><th>violations</th><th>ops/s</th><th>retries</th><th>p50 wait</th><th>p99 wait</th><th class="l">what happened</th></tr>
{{range .Rows}}<tr{{if failed .}} class="bad"{{end}}><td class="l">{{.Variant}}</td><td class="l {{.Kind}}">{{.Kind}}</td><td class="l">{{.Engine}}</td><td class="l">{{.Mode}}</td><td>{{.Workers}}</td><td>{{.Ops}}</td><td class="{{.Kind}}">{{verdict .}}</td><td>{{f0 .OpsPerSec}}</td><td>{{.Retries}}</td><td>{{ms .WaitP50ms}}</td><td>{{ms .WaitP99ms}}</td><td class="detail">{{.Detail}}{{if .Error}} — error: {{.Error}}{{end}}</td></tr>
{{end}}</table></section>
{{end}}</main></body></html>
`))

// barChart draws one horizontal bar per result.
func barChart(rows []Result, title string, val func(Result) float64, format string, byKind bool) template.HTML {
	const (
		left, right, rowH, top = 250.0, 70.0, 22.0, 30.0
		width                  = 640.0
	)
	maxV := 0.0
	for _, r := range rows {
		maxV = math.Max(maxV, val(r))
	}
	if maxV == 0 {
		maxV = 1
	}
	h := top + rowH*float64(len(rows)) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, width, h, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="0" y="16" font-weight="600" font-size="13">%s</text>`, html.EscapeString(title))
	for i, r := range rows {
		y := top + rowH*float64(i)
		label := r.Variant + " · " + r.Engine
		if len(label) > 40 {
			label = label[:39] + "…"
		}
		color := "var(--fixed)"
		if r.Kind == Broken {
			color = "var(--broken)"
		}
		if !byKind {
			color = "#5b7fd6"
		}
		bw := (width - left - right) * val(r) / maxV
		if val(r) > 0 {
			bw = math.Max(bw, 2)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#344054">%s</text>`, left-8, y+14, html.EscapeString(label))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" rx="2" fill="%s"/>`, left, y+3, bw, rowH-7, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#344054">%s</text>`, left+bw+5, y+14, fmt.Sprintf(format, val(r)))
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#98a2b3"/>`, left, top, left, h-8)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// sweepColors colour the sweep's variants.
var sweepColors = []string{"#d97706", "#2563eb", "#16a34a", "#9333ea", "#db2777"}

// lineChart draws val against workers, one line per variant.
func lineChart(rows []Result, title string, val func(Result) float64) template.HTML {
	const (
		width, height            = 460.0, 300.0
		left, right, top, bottom = 56.0, 16.0, 30.0, 74.0
	)
	var variants []string
	var workers []int
	maxV := 0.0
	for _, r := range rows {
		if !slices.Contains(variants, r.Variant) {
			variants = append(variants, r.Variant)
		}
		if !slices.Contains(workers, r.Workers) {
			workers = append(workers, r.Workers)
		}
		maxV = math.Max(maxV, val(r))
	}
	slices.Sort(workers)
	if maxV == 0 {
		maxV = 1
	}
	maxV = niceCeil(maxV)
	pw, ph := width-left-right, height-top-bottom
	x := func(w int) float64 {
		if len(workers) == 1 {
			return left + pw/2
		}
		i := slices.Index(workers, w)
		return left + pw*float64(i)/float64(len(workers)-1)
	}
	y := func(v float64) float64 { return top + ph*(1-v/maxV) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, width, height, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="0" y="16" font-weight="600" font-size="13">%s</text>`, html.EscapeString(title))
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eaecf0"/>`, left, width-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#667085">%s</text>`, left-6, y(v)+4, compact(v))
	}
	for _, w := range workers {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#667085">%d</text>`, x(w), top+ph+16, w)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#667085">workers</text>`, left+pw/2, top+ph+32)
	for i, v := range variants {
		c := sweepColors[i%len(sweepColors)]
		var pts []string
		for _, r := range rows {
			if r.Variant == v {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(r.Workers), y(val(r))))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2.5" points="%s"/>`, c, strings.Join(pts, " "))
		for _, p := range pts {
			xy := strings.Split(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`, xy[0], xy[1], c)
		}
		lx := left + float64(i%2)*pw/2
		ly := top + ph + 50 + float64(i/2)*16
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="4" fill="%s"/><text x="%.0f" y="%.0f" fill="#344054">%s</text>`, lx, ly-4, c, lx+16, ly+1, html.EscapeString(v))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func compact(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}
