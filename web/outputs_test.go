package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestRunOutputsAndMetricsChart(t *testing.T) {
	t.Parallel()
	b := setupWithOpts(t, setupOpts{mappings: []orchestrator.Mapping{anyMapping()}})
	ctx := context.Background()
	var last int64
	for i, f1 := range []float64{0.71, 0.83, 0.91} {
		id := b.pushRun(t, fmt.Sprintf("refs/heads/b%d", i), strings.Repeat(fmt.Sprint(i+1), 40))
		require.NoError(t, b.store.RunAttemptStart(ctx, orchestrator.RunAttemptStartParams{RunID: id, Attempt: 1, Argv: []string{"x"}}))
		exit := 0
		out := fmt.Sprintf(`{"model": "acme/clf", "model_revision": "r%d", "metrics": {"f1": %v, "loss": %v, "note": "x"}}`, i, f1, 1-f1)
		require.NoError(t, b.store.RunAttemptFinish(ctx, orchestrator.RunAttemptFinishParams{RunID: id, Attempt: 1,
			Transition: orchestrator.TransitionSucceed, ExitCode: &exit, Output: []byte(out)}))
		last = id
	}

	p := b.getPage(t, "/mappings/tickets", nil)
	require.Equal(t, 200, p.status, p.raw)
	chart := p.one(t, byID("metrics-chart"))
	require.Len(t, find(chart, byTag("polyline")), 2, "one line per numeric metric")
	require.Len(t, find(chart, byTag("circle")), 6)
	legend := text(p.one(t, byAttr("class", "legend")))
	require.Contains(t, legend, "f1: last 0.91 (range 0.71 – 0.91)")
	require.Contains(t, legend, "loss: last")

	p = b.getPage(t, fmt.Sprintf("/runs/%d", last), nil)
	require.Contains(t, text(p.one(t, byID("run-output"))), `"model_revision": "r2"`)

	status, _, resp := b.request(t, "GET", fmt.Sprintf("/api/v1/runs/%d", last), "", nil)
	require.Equal(t, 200, status)
	require.Equal(t, "acme/clf", resp["output"].(map[string]any)["model"])
}
