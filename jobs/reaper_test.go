package jobs

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReaperOrphanAfter checks how long the reaper lets each kind of job run before handing it back: longer than
// River lets one attempt of it last (its worker's timeout), so that a live attempt is never handed back, and far
// shorter than River's own rescue, which waits for the longest run.
func TestReaperOrphanAfter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		reconciler *Reconciler
		wantKinds  []string
	}{
		{name: "CatchUpOff", wantKinds: []string{"notify"}},
		{name: "ShortInterval", reconciler: &Reconciler{Interval: time.Minute}, wantKinds: []string{"notify", "reconcile"}},
		{name: "LongInterval", reconciler: &Reconciler{Interval: 2 * time.Hour}, wantKinds: []string{"notify", "reconcile"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			after := (&Reaper{Reconciler: tc.reconciler}).orphanAfter()
			require.Equal(t, tc.wantKinds, slices.Sorted(maps.Keys(after)))
			timeouts := map[string]time.Duration{
				NotifyArgs{}.Kind(): NewNotifyWorker(nil, NotifyConfig{}).Timeout(nil),
			}
			if tc.reconciler != nil {
				timeouts[ReconcileArgs{}.Kind()] = (&ReconcileWorker{r: tc.reconciler}).Timeout(nil)
			}
			for kind, d := range after {
				require.Greater(t, d, timeouts[kind], "%s: a live attempt would be handed back", kind)
				require.Less(t, d, ClientConfig{}.RescueAfter(), "%s: River's rescue would come first", kind)
			}
		})
	}
}
