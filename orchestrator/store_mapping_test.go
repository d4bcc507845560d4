package orchestrator_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestMappingPathsStored: a mapping's paths and ignore_paths are written by every write of a mapping, read back
// by every read, and a change to them alone is a change of the mapping that the copy deciding deliveries sees.
func TestMappingPathsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	withPaths := func(m orchestrator.Mapping, paths, ignore []string) orchestrator.Mapping {
		m.Paths, m.IgnorePaths = paths, ignore
		return m
	}
	data := orchestrator.PathFilter{Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md"}}
	cards := orchestrator.PathFilter{IgnorePaths: []string{"**/*.md"}}
	cases := []struct {
		name  string
		write func(t *testing.T, s *orchestrator.Store)
		want  orchestrator.PathFilter // what the mapping "m" holds after the write
	}{
		{"FileWithout", func(t *testing.T, s *orchestrator.Store) {
			_, err := s.MappingSync(ctx, []orchestrator.Mapping{mapping("m", "acme/m")})
			require.NoError(t, err)
		}, orchestrator.PathFilter{Paths: []string{}, IgnorePaths: []string{}}},
		{"FileWith", func(t *testing.T, s *orchestrator.Store) {
			_, err := s.MappingSync(ctx, []orchestrator.Mapping{withPaths(mapping("m", "acme/m"), data.Paths, data.IgnorePaths)})
			require.NoError(t, err)
		}, data},
		{"FileChanged", func(t *testing.T, s *orchestrator.Store) {
			_, err := s.MappingSync(ctx, []orchestrator.Mapping{withPaths(mapping("m", "acme/m"), data.Paths, data.IgnorePaths)})
			require.NoError(t, err)
			_, err = s.MappingSync(ctx, []orchestrator.Mapping{withPaths(mapping("m", "acme/m"), nil, cards.IgnorePaths)})
			require.NoError(t, err)
		}, orchestrator.PathFilter{Paths: []string{}, IgnorePaths: cards.IgnorePaths}},
		{"APICreated", func(t *testing.T, s *orchestrator.Store) {
			created, err := s.MappingCreate(ctx, withPaths(mapping("m", "acme/m"), data.Paths, data.IgnorePaths))
			require.NoError(t, err)
			require.Equal(t, data, created.PathFilter(), "the answer of the create")
		}, data},
		{"APIUpdated", func(t *testing.T, s *orchestrator.Store) {
			_, err := s.MappingCreate(ctx, withPaths(mapping("m", "acme/m"), data.Paths, data.IgnorePaths))
			require.NoError(t, err)
			updated, err := s.MappingUpdate(ctx, withPaths(mapping("m", "acme/m"), []string{"train/**"}, nil))
			require.NoError(t, err)
			require.Equal(t, []string{"train/**"}, updated.Paths, "the answer of the update")
		}, orchestrator.PathFilter{Paths: []string{"train/**"}, IgnorePaths: []string{}}},
		{"APIRemoved", func(t *testing.T, s *orchestrator.Store) {
			_, err := s.MappingCreate(ctx, withPaths(mapping("m", "acme/m"), data.Paths, data.IgnorePaths))
			require.NoError(t, err)
			_, err = s.MappingUpdate(ctx, mapping("m", "acme/m"))
			require.NoError(t, err)
		}, orchestrator.PathFilter{Paths: []string{}, IgnorePaths: []string{}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tc.write(t, b.store)
			got, err := b.store.MappingGetByName(ctx, "m")
			require.NoError(t, err)
			require.Equal(t, tc.want, got.PathFilter())
			list, err := b.store.MappingList(ctx)
			require.NoError(t, err)
			require.Equal(t, tc.want, list[0].PathFilter())
			summaries, err := b.store.MappingSummaryList(ctx)
			require.NoError(t, err)
			require.Equal(t, tc.want, summaries[0].PathFilter())
		})
	}

	t.Run("ChangeReachesTheDecidingCopy", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withPaths(mapping("tickets", "acme/support-tickets"), data.Paths, data.IgnorePaths))
		cached, err := b.store.CachedMappings(ctx)
		require.NoError(t, err)
		require.Equal(t, data, cached[0].PathFilter())

		_, err = b.store.MappingSync(ctx, []orchestrator.Mapping{withPaths(mapping("tickets", "acme/support-tickets"), nil, cards.IgnorePaths)})
		require.NoError(t, err)
		// The next delivery finds the copy stale and reads the mappings again.
		_, err = b.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{Delivery: delivery(t, "dataset-main-push.json")})
		require.NoError(t, err)
		cached, err = b.store.CachedMappings(ctx)
		require.NoError(t, err)
		require.Equal(t, orchestrator.PathFilter{Paths: []string{}, IgnorePaths: cards.IgnorePaths}, cached[0].PathFilter())
	})

	t.Run("InvalidRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.store.MappingCreate(ctx, withPaths(mapping("ticket-classifier", "acme/m"), nil, []string{"["}))
		require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
		require.Equal(t, `mapping "ticket-classifier": ignore_paths[0] "[": syntax error in pattern`, orchestrator.ErrorMessage(err))
		require.Zero(t, count(t, b.pool, `SELECT count(*) FROM mappings`))
	})
}
