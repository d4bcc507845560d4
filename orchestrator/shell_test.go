package orchestrator_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// TestShellJoin checks the quoting of each kind of argument, and that /bin/sh splits the joined line back into
// exactly the arguments it was made from.
func TestShellJoin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		argv []string
		want string
	}{
		{"safe characters stay bare", []string{"python", "train.py", "--lr=0.1", "acme/x@main", "50%", "a+b:c,d_e-f"}, "python train.py --lr=0.1 acme/x@main 50% a+b:c,d_e-f"},
		{"empty argument", []string{"echo", ""}, "echo ''"},
		{"spaces", []string{"echo", "two words", " lead", "trail "}, "echo 'two words' ' lead' 'trail '"},
		{"single quote", []string{"echo", "it's"}, `echo 'it'\''s'`},
		{"only quotes", []string{"'", "''"}, `''\''' ''\'''\'''`},
		{"double quotes and backslash", []string{`say "hi" \n`}, `'say "hi" \n'`},
		{"dollar and backticks", []string{"$HOME", "`id`", "$(id)"}, "'$HOME' '`id`' '$(id)'"},
		{"placeholder stays literal", []string{"train", "--revision", "${DATASET_REVISION}"}, "train --revision '${DATASET_REVISION}'"},
		{"newline and tab", []string{"a\nb", "c\td"}, "'a\nb' 'c\td'"},
		{"shell operators", []string{"/bin/sh", "-c", `echo "training on $1"; for i in 1 2; do echo $i; done`}, `/bin/sh -c 'echo "training on $1"; for i in 1 2; do echo $i; done'`},
		{"globs and redirections", []string{"*", "a?", "[x]", "a>b", "a|b", "a&b", "~", "#c"}, "'*' 'a?' '[x]' 'a>b' 'a|b' 'a&b' '~' '#c'"},
		{"unicode", []string{"données", "训练"}, "'données' '训练'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := orchestrator.ShellJoin(tc.argv)
			require.Equal(t, tc.want, got)

			out, err := exec.Command("/bin/sh", "-c", `printf '[%s]\n' `+got).Output()
			require.NoError(t, err)
			var want strings.Builder
			for _, a := range tc.argv {
				want.WriteString("[" + a + "]\n")
			}
			require.Equal(t, want.String(), string(out), "what /bin/sh made of %s", got)
		})
	}
}
