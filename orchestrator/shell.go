package orchestrator

import "strings"

// ShellQuote quotes s for a POSIX shell when it needs it, so that a printed command can be pasted back: an
// argument made only of letters, digits and @%+=:,./_- is left bare, anything else (the empty string included)
// goes in single quotes, each ' in it closing the quotes, written as \' and reopening them. Inside single
// quotes nothing is expanded, so a ${DATASET_REVISION} placeholder stays literal.
func ShellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellJoin writes an argv as one POSIX shell command line, each argument quoted by ShellQuote and separated by
// a space, so that a shell splits the line back into exactly these arguments.
func ShellJoin(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = ShellQuote(a)
	}
	return strings.Join(quoted, " ")
}
