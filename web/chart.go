package web

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// metricsChart is a small server-rendered SVG line chart of the metrics that a mapping's runs reported in
// RUN_OUTPUT, one line per metric, each scaled to its own range (shown in the legend).
type metricsChart struct {
	Width, Height int
	Series        []chartSeries
	Runs          []int64 // the run of each point, oldest first
}

type chartSeries struct {
	Name     string
	Color    string
	Points   string // SVG polyline points
	Min, Max float64
	Last     float64
	Dots     []chartDot
}

type chartDot struct {
	X, Y  float64
	RunID int64
	Value float64
}

var chartColors = []string{"#0969da", "#1a7f37", "#cf222e", "#8250df", "#bf8700", "#1b7c83"}

// maxChartSeries bounds how many metrics are drawn.
const maxChartSeries = 6

// newMetricsChart builds the chart from runs (oldest first); it returns nil when no run reported a numeric
// metric.
func newMetricsChart(runs []orchestrator.Run) *metricsChart {
	values := map[string]map[int]float64{}
	for i, r := range runs {
		var out struct {
			Metrics map[string]any `json:"metrics"`
		}
		if json.Unmarshal(r.Output, &out) != nil {
			continue
		}
		for name, v := range out.Metrics {
			f, ok := v.(float64)
			if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			if values[name] == nil {
				values[name] = map[int]float64{}
			}
			values[name][i] = f
		}
	}
	if len(values) == 0 {
		return nil
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) > maxChartSeries {
		names = names[:maxChartSeries]
	}

	c := &metricsChart{Width: 640, Height: 160}
	for _, r := range runs {
		c.Runs = append(c.Runs, r.ID)
	}
	const pad = 8.0
	x := func(i int) float64 {
		if len(runs) == 1 {
			return float64(c.Width) / 2
		}
		return pad + float64(i)*(float64(c.Width)-2*pad)/float64(len(runs)-1)
	}
	for k, name := range names {
		s := chartSeries{Name: name, Color: chartColors[k%len(chartColors)], Min: math.Inf(1), Max: math.Inf(-1)}
		for _, v := range values[name] {
			s.Min, s.Max = math.Min(s.Min, v), math.Max(s.Max, v)
		}
		span := s.Max - s.Min
		var pts []string
		for i := range runs {
			v, ok := values[name][i]
			if !ok {
				continue
			}
			y := float64(c.Height) / 2
			if span > 0 {
				y = float64(c.Height) - pad - (v-s.Min)/span*(float64(c.Height)-2*pad)
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y))
			s.Dots = append(s.Dots, chartDot{X: x(i), Y: y, RunID: runs[i].ID, Value: v})
			s.Last = v
		}
		s.Points = strings.Join(pts, " ")
		c.Series = append(c.Series, s)
	}
	return c
}
