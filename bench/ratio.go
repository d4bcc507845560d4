package bench

import (
	"slices"
	"strings"
)

// rate returns the operations per second of the load's window; 0 for an empty window.
func (r loadResult) rate() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.ops) / r.window.Seconds()
}

// rates returns the rate of each load.
func rates(loads []loadResult) []float64 {
	out := make([]float64, len(loads))
	for i, l := range loads {
		out[i] = l.rate()
	}
	return out
}

// neighbourRatio returns ours against the limit measured on either side of it: ours over the mean of before
// and after, so that a drift of the machine's speed during the three rounds falls on both sides. It is 0 when
// the limit is not positive.
func neighbourRatio(ours, before, after float64) float64 {
	limit := (before + after) / 2
	if !(limit > 0) {
		return 0
	}
	return ours / limit
}

// median returns the median of v (the mean of the middle two for an even count), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// share returns the orchestrator's own share of a latency: each percentile of ours less the same percentile
// of the bound (fork/exec of the same command, measured in the same run), as a figure in ms whose value is the
// median's share. Percentiles of two unpaired samples are compared, not a percentile of differences.
func share(ours, bound Latencies) Figure {
	p50 := ms(ours.Percentile(50) - bound.Percentile(50))
	p99 := ms(ours.Percentile(99) - bound.Percentile(99))
	return Figure{Value: p50, Unit: "ms", P50Ms: &p50, P99Ms: &p99, N: len(ours)}
}

// detailKey turns a row's name into a key of the report's details: lower case, each run of other characters
// than letters and digits one underscore, e.g. "ingest c=32, web only" into "ingest_c_32_web_only".
func detailKey(name string) string {
	var b strings.Builder
	gap := false
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if gap && b.Len() > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			gap = false
			continue
		}
		gap = true
	}
	return b.String()
}
