package api_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/web/api"
)

func TestDollars(t *testing.T) {
	t.Parallel()
	cases := []struct {
		micro int64
		want  string
	}{
		{0, "$0.00"}, {1, "<$0.01"}, {4999, "<$0.01"}, {5000, "$0.01"}, {416675, "$0.42"}, {420000, "$0.42"},
		{995000, "$1.00"}, {123456789, "$123.46"}, {-420000, "-$0.42"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, api.Dollars(tc.micro), "%d", tc.micro)
	}
}
