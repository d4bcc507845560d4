package web

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMatchToken checks the comparison every admin credential goes through: which configured token a given
// one is, compared through hashes of equal length, so that a prefix, a longer string or an empty one never
// matches, nor an unset previous token.
func TestMatchToken(t *testing.T) {
	t.Parallel()
	rotating, single := newAuth("new-token", "old-token", false), newAuth("new-token", "", false)
	cases := []struct {
		name  string
		auth  *auth
		given string
		want  string // the token matched; "" for none
	}{
		{name: "current", auth: rotating, given: "new-token", want: "new-token"},
		{name: "previous", auth: rotating, given: "old-token", want: "old-token"},
		{name: "prefix", auth: rotating, given: "old-toke"},
		{name: "longer", auth: rotating, given: "new-token-"},
		{name: "empty", auth: rotating, given: ""},
		{name: "empty with no previous", auth: single, given: ""},
		{name: "previous once removed", auth: single, given: "old-token"},
		{name: "no token configured", auth: newAuth("", "", false), given: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := tc.auth.matchToken(tc.given)
			require.Equal(t, tc.want != "", ok)
			require.Equal(t, tc.want, string(got.token))
		})
	}
}
