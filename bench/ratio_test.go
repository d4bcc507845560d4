package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNeighbourRatio(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name                string
		ours, before, after float64
		want                float64
	}{
		{"steady machine", 250, 1000, 1000, 0.25},
		{"machine slowing down", 300, 1400, 1000, 0.25},
		{"no limit", 300, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.InDelta(t, tt.want, neighbourRatio(tt.ours, tt.before, tt.after), 1e-9)
		})
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		require.InDelta(t, tt.want, median(tt.in), 1e-9, "%v", tt.in)
	}
}

func TestShare(t *testing.T) {
	t.Parallel()
	var ours, bound Latencies
	for i := 1; i <= 100; i++ {
		ours = append(ours, time.Duration(i+10)*time.Millisecond)
		bound = append(bound, time.Duration(i)*time.Millisecond)
	}
	f := share(ours, bound)
	require.InDelta(t, 10, *f.P50Ms, 1e-9)
	require.InDelta(t, 10, *f.P99Ms, 1e-9)
	require.InDelta(t, 10, f.Value, 1e-9)
	require.Equal(t, "ms", f.Unit)
}

func TestParsePgbenchLog(t *testing.T) {
	t.Parallel()
	log := "0 0 1500 0 1700000000 500000\n" +
		"1 0 2000 0 1700000000 600000\n" +
		"\n" +
		"1 1 failed 0 1700000001 0\n"
	txs, err := parsePgbenchLog(strings.NewReader(log))
	require.NoError(t, err)
	require.Len(t, txs, 3)
	require.Equal(t, 1500*time.Microsecond, txs[0].latency)
	require.Equal(t, time.Unix(1700000000, 498500*1000), txs[0].start)
	require.True(t, txs[2].failed)

	for _, bad := range []string{"0 0 1500 0\n", "0 0 1500 0 x 5\n"} {
		_, err := parsePgbenchLog(strings.NewReader(bad))
		require.Error(t, err, "%q", bad)
	}
}

func TestPgbenchWindow(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) pgbenchTx {
		return pgbenchTx{start: t0.Add(time.Duration(ms) * time.Millisecond), latency: time.Millisecond}
	}
	txs := []pgbenchTx{at(0), at(400), at(500), at(900), at(1499), at(1500), at(1800)}
	txs = append(txs, pgbenchTx{start: t0.Add(time.Second), failed: true})

	res := pgbenchWindow(txs, 500*time.Millisecond, time.Second)
	require.Equal(t, 3, res.ops, "500, 900 and 1499 start within [500, 1500)")
	require.Equal(t, 1, res.errs)
	require.Equal(t, time.Second, res.window)

	// A run that ended before the window did: the window is cut to the last start.
	res = pgbenchWindow(txs, 500*time.Millisecond, 5*time.Second)
	require.Equal(t, 1300*time.Millisecond, res.window)
	require.Equal(t, 4, res.ops)

	require.Zero(t, pgbenchWindow(nil, time.Second, time.Second).ops)
}

func TestReportTargets(t *testing.T) {
	t.Parallel()
	r := &Report{}
	r.add(Row{Name: "a", Ours: Figure{Value: 1, Unit: "x"}, Target: "t", Met: ptr(true)})
	r.add(Row{Name: "b", Ours: Figure{Value: 1, Unit: "x"}, Target: "t", Met: ptr(false)})
	r.add(Row{Name: "c", Ours: Figure{Value: 1, Unit: "x"}})
	r.add(Row{Name: "d", Ours: Figure{Value: 1, Unit: "ms"}, Limit: &Figure{Value: 2, Unit: "ms"}, noRatio: true})
	r.add(Row{Name: "e", Ours: Figure{Value: 1, Unit: "x"}, Limit: &Figure{Value: 4, Unit: "x"}, Ratio: ptr(0.3)})
	r.add(Row{Name: "f", Ours: Figure{Value: 1, Unit: "x"}, Limit: &Figure{Value: 4, Unit: "x"}})
	met, missed := r.targets()
	require.Equal(t, []string{"a"}, met)
	require.Equal(t, []string{"b"}, missed)
	require.Nil(t, r.Row("d").Ratio, "a share has no ratio")
	require.InDelta(t, 0.3, *r.Row("e").Ratio, 1e-9, "a ratio given is kept")
	require.InDelta(t, 0.25, *r.Row("f").Ratio, 1e-9)
	require.Contains(t, r.Table(), "targets: 1 met, 1 missed (b)")
}

func TestDetailKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ingest c=32, web only (--role web)":                                 "ingest_c_32_web_only_role_web",
		"ingest c=32, workers running, 1,000,000 runs already in the tables": "ingest_c_32_workers_running_1_000_000_runs_already_in_the_tables",
		"—": "",
	} {
		require.Equal(t, want, detailKey(in), in)
	}
}

func TestWALUsePerOp(t *testing.T) {
	t.Parallel()
	u := walUse{records: 110, fpi: 12, bytes: 5000}.sub(walUse{records: 10, fpi: 2, bytes: 1000}).add(walUse{bytes: 1000})
	require.Equal(t, map[string]float64{"records": 10, "full_page_images": 1, "bytes": 500}, u.perOp(10))
	require.Nil(t, u.perOp(0))
}
