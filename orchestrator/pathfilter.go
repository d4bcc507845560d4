package orchestrator

import (
	"fmt"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// Limits of a mapping's paths and ignore_paths.
const (
	// PathPatternsMax is the most patterns each of paths and ignore_paths may hold.
	PathPatternsMax = 100
	// PathPatternBytesMax is the longest a single pattern may be, in bytes.
	PathPatternBytesMax = 1000
)

// PathFilter is a mapping's paths and ignore_paths: which changed files make a revision worth a run.
//
// Each pattern is a glob matched against a file's path relative to the repository's root, as the Hub lists it
// ("data/train-00000.parquet", "README.md"): '*' and '?' match within one path segment, "**" as a whole segment
// matches any number of segments (none included), [a-z] and [!a-z] are character classes, {a,b} are
// alternatives and '\' escapes the character after it. A pattern always matches from the root: "README.md" is
// the card at the top only, "**/README.md" is any README.md, and "*.csv" matches only the CSV files at the
// top. Matching is case-sensitive, as git's paths are. A pattern starting with "/" is refused rather than read
// as anchored, since every pattern is anchored already.
type PathFilter struct {
	Paths       []string // a run needs a changed file matching one of these; empty: every file
	IgnorePaths []string // changes to these alone never trigger
}

// Empty reports whether f filters nothing: both lists are empty.
func (f PathFilter) Empty() bool { return len(f.Paths) == 0 && len(f.IgnorePaths) == 0 }

// Validate checks every pattern of both lists and returns an error with CodeInvalid naming the list, the
// pattern's index and the pattern, such as `paths[1] "data/[": syntax error in pattern`.
func (f PathFilter) Validate() error {
	if err := validPathPatterns("paths", f.Paths); err != nil {
		return err
	}
	return validPathPatterns("ignore_paths", f.IgnorePaths)
}

// Watches reports whether a change to the file at path (relative to the repository's root, without a leading
// "/") counts: path matches one of Paths, or Paths is empty, and none of IgnorePaths. A pattern that is not
// valid matches nothing.
func (f PathFilter) Watches(path string) bool {
	if len(f.Paths) > 0 && !matchesAny(f.Paths, path) {
		return false
	}
	return !matchesAny(f.IgnorePaths, path)
}

// matchesAny reports whether path matches one of the patterns.
func matchesAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if ok, _ := doublestar.Match(p, path); ok {
			return true
		}
	}
	return false
}

// validPathPatterns checks the patterns of the list named list.
func validPathPatterns(list string, patterns []string) error {
	if len(patterns) > PathPatternsMax {
		return Errorf(CodeInvalid, "%s has %d patterns; at most %d are allowed", list, len(patterns), PathPatternsMax)
	}
	first := make(map[string]int, len(patterns))
	for i, p := range patterns {
		if err := validPathPattern(p); err != nil {
			return Errorf(CodeInvalid, "%s[%d] %q: %s", list, i, p, err)
		}
		if j, dup := first[p]; dup {
			return Errorf(CodeInvalid, "%s[%d] %q: duplicate of %s[%d]", list, i, p, list, j)
		}
		first[p] = i
	}
	return nil
}

// validPathPattern returns what is wrong with one pattern, or nil. Besides the syntax, it refuses the forms
// that are well-formed but could never match a path as the Hub lists it, which would silently turn a mapping
// off: a leading "/" or "./", a trailing "/".
func validPathPattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("must not be empty")
	case len(p) > PathPatternBytesMax:
		return fmt.Errorf("is %d bytes long; at most %d are allowed", len(p), PathPatternBytesMax)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("contains a control character")
	case strings.TrimSpace(p) != p:
		return fmt.Errorf("starts or ends with a space")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("must be relative to the repository's root, without a leading /: write %q", strings.TrimLeft(p, "/"))
	case strings.HasPrefix(p, "./"):
		return fmt.Errorf("must be relative to the repository's root, without a leading ./: write %q", strings.TrimPrefix(p, "./"))
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("ends with / and so matches no file: write %q for the files under it", p+"**")
	case strings.HasPrefix(p, "!"):
		return fmt.Errorf(`a leading ! (negation) is not supported: list the files to leave out in ignore_paths (a name that starts with ! is written \!name)`)
	case !doublestar.ValidatePattern(p):
		return doublestar.ErrBadPattern
	}
	return nil
}
