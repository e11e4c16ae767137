package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRedisHotKeyChart draws the hot-key wait distribution of every
// contender as an SVG: the share of acquires (y) that waited at most x, on a
// log scale. It runs only when HAITA_BENCH_CHART names the output file:
//
//	cd bench && HAITA_BENCH_CHART=../docs/img/redis-hotkey-wait.svg go test -run RedisHotKeyChart -v .
func TestRedisHotKeyChart(t *testing.T) {
	out := os.Getenv("HAITA_BENCH_CHART")
	if out == "" {
		t.Skip("set HAITA_BENCH_CHART to the SVG file to write")
	}
	c := needRedis(t, 0)
	names, m := peers(t, c)
	const handoffs = 8000
	var series []chartSeries
	for _, name := range names {
		if name == "raw" {
			continue
		}
		res, err := runHotKey(context.Background(), m[name], uniqueKey("chart:"), 8, handoffs)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-12s %6.0f handoffs/s p50 %v p99 %v p99.9 %v max %v shares %v", name,
			handoffs/res.elapsed.Seconds(), quantile(res.waits, .5), quantile(res.waits, .99),
			quantile(res.waits, .999), res.waits[len(res.waits)-1], res.shares)
		series = append(series, chartSeries{name: name, waits: res.waits})
	}
	if err := os.WriteFile(out, []byte(svgCDF(series, handoffs)), 0o644); err != nil {
		t.Fatal(err)
	}
}

type chartSeries struct {
	name  string
	waits []time.Duration // sorted
}

// svgCDF renders the cumulative distributions, x from 10µs to 10s (log).
func svgCDF(series []chartSeries, n int) string {
	const w, h, left, right, top, bottom = 760.0, 420.0, 60.0, 170.0, 40.0, 50.0
	pw, ph := w-left-right, h-top-bottom
	lo, hi := math.Log10(10e-6), math.Log10(10)
	x := func(d time.Duration) float64 {
		s := math.Max(d.Seconds(), 10e-6)
		return left + pw*(math.Min(math.Log10(s), hi)-lo)/(hi-lo)
	}
	y := func(f float64) float64 { return top + ph*(1-f) }
	colors := []string{"#d62728", "#1f77b4", "#17becf", "#ff7f0e", "#bcbd22", "#2ca02c"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="14">Hot key, 8 goroutines, %d handoffs each: share of acquires that waited at most x</text>`+"\n", left, n)
	for e := -5; e <= 1; e++ {
		d := time.Duration(math.Pow10(e) * float64(time.Second))
		xx := x(d)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", xx, top, xx, top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%v</text>`+"\n", xx, top+ph+16, d)
	}
	for _, f := range []float64{0, .5, .9, .99, 1} {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(f), left+pw, y(f))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(f)+4, f)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">wait for the lock (log scale)</text>`+"\n", left+pw/2, h-10)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", left, top, pw, ph)
	for i, s := range series {
		col := colors[i%len(colors)]
		var pts strings.Builder
		step := max(1, len(s.waits)/400)
		for j := 0; j < len(s.waits); j += step {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(s.waits[j]), y(float64(j+1)/float64(len(s.waits))))
		}
		last := len(s.waits) - 1
		fmt.Fprintf(&pts, "%.1f,%.1f", x(s.waits[last]), y(1))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, pts.String())
		ly := top + 20 + float64(i)*20
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/>`+"\n", w-right+15, ly, w-right+40, ly, col)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", w-right+46, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
