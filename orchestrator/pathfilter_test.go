package orchestrator_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator"
)

func TestPathFilterWatches(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		filter orchestrator.PathFilter
		path   string
		want   bool
	}{
		{"NoFilterWatchesEverything", orchestrator.PathFilter{}, "README.md", true},
		{"NoFilterWatchesDeepFiles", orchestrator.PathFilter{}, "a/b/c.txt", true},

		{"DataTreeShard", paths("data/**"), "data/train-00000.parquet", true},
		{"DataTreeDeep", paths("data/**"), "data/2025/01/part.parquet", true},
		{"DataTreeNotTheCard", paths("data/**"), "README.md", false},
		{"DataTreeNotAPrefix", paths("data/**"), "database/x.parquet", false},
		{"DataTreeNotNested", paths("data/**"), "old/data/x.parquet", false},

		{"ParquetTop", paths("**/*.parquet"), "train.parquet", true},
		{"ParquetDeep", paths("**/*.parquet"), "data/en/train-00000.parquet", true},
		{"ParquetNotCSV", paths("**/*.parquet"), "data/train.csv", false},
		{"ParquetSuffixOnly", paths("**/*.parquet"), "data/train.parquet.lock", false},

		{"CardExact", paths("README.md"), "README.md", true},
		{"CardOnlyAtTop", paths("README.md"), "docs/README.md", false},
		{"CardCaseSensitive", paths("README.md"), "readme.md", false},

		{"MarkdownTop", paths("**/*.md"), "README.md", true},
		{"MarkdownDeep", paths("**/*.md"), "docs/guide/intro.md", true},
		{"MarkdownNotOther", paths("**/*.md"), "docs/guide/intro.mdx", false},

		{"CSVTopLevel", paths("*.csv"), "train.csv", true},
		{"CSVNotInSubfolder", paths("*.csv"), "data/train.csv", false},

		{"ClassRange", paths("data/train-0000[0-4].parquet"), "data/train-00003.parquet", true},
		{"ClassRangeOutside", paths("data/train-0000[0-4].parquet"), "data/train-00007.parquet", false},
		{"ClassNegated", paths("data/[!_]*"), "data/train.csv", true},
		{"ClassNegatedRefuses", paths("data/[!_]*"), "data/_tmp.csv", false},
		{"QuestionMarkOneChar", paths("split?.csv"), "split1.csv", true},
		{"QuestionMarkNotSlash", paths("split?.csv"), "split/.csv", false},
		{"Alternatives", paths("data/*.{csv,jsonl}"), "data/train.jsonl", true},
		{"EscapedStar", paths(`data/\*.csv`), "data/*.csv", true},
		{"EscapedStarLiteral", paths(`data/\*.csv`), "data/train.csv", false},

		{"SecondPatternMatches", paths("data/**", "**/*.parquet"), "shards/x.parquet", true},
		{"IgnoredCard", orchestrator.PathFilter{IgnorePaths: []string{"README.md", "**/*.md"}}, "README.md", false},
		{"IgnoredDeepMarkdown", orchestrator.PathFilter{IgnorePaths: []string{"README.md", "**/*.md"}}, "docs/x.md", false},
		{"IgnoreLeavesTheRest", orchestrator.PathFilter{IgnorePaths: []string{"README.md", "**/*.md"}}, ".gitattributes", true},
		{"IgnoreWinsOverPaths", orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}, "data/README.md", false},
		{"PathsAndIgnoreBothPass", orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}, "data/x.parquet", true},
		{"PathsAndIgnoreOutsidePaths", orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}, "train.py", false},
		{"InvalidPatternMatchesNothing", paths("data/["), "data/[", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tc.filter.Watches(tc.path), "%+v watching %q", tc.filter, tc.path)
		})
	}
}

func TestPathFilterValidate(t *testing.T) {
	t.Parallel()
	many := make([]string, orchestrator.PathPatternsMax+1)
	for i := range many {
		many[i] = fmt.Sprintf("data/%d/**", i)
	}
	long := strings.Repeat("a", orchestrator.PathPatternBytesMax+1)
	cases := []struct {
		name    string
		filter  orchestrator.PathFilter
		wantErr string // empty: valid
	}{
		{"Empty", orchestrator.PathFilter{}, ""},
		{"Usual", orchestrator.PathFilter{Paths: []string{"data/**", "**/*.parquet"}, IgnorePaths: []string{"README.md", "**/*.md"}}, ""},
		{"ClassesAndAlternatives", paths("data/[a-z]*.{csv,jsonl}", `\!odd.csv`), ""},
		{"AtTheLimits", orchestrator.PathFilter{Paths: many[:orchestrator.PathPatternsMax], IgnorePaths: []string{long[1:]}}, ""},
		{"SamePatternInBothLists", orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"data/**"}}, ""},

		{"UnclosedClass", paths("data/**", "data/["), `paths[1] "data/[": syntax error in pattern`},
		{"EmptyClass", orchestrator.PathFilter{IgnorePaths: []string{"[]"}}, `ignore_paths[0] "[]": syntax error in pattern`},
		{"UnclosedAlternatives", paths("data/{a,b"), `paths[0] "data/{a,b": syntax error in pattern`},
		{"TrailingEscape", paths(`data\`), `paths[0] "data\\": syntax error in pattern`},
		{"EmptyString", paths("data/**", ""), `paths[1] "": must not be empty`},
		{"EmptyIgnore", orchestrator.PathFilter{IgnorePaths: []string{""}}, `ignore_paths[0] "": must not be empty`},
		{"Spaces", paths(" data/**"), `paths[0] " data/**": starts or ends with a space`},
		{"LineBreak", paths("data/**\nREADME.md"), `paths[0] "data/**\nREADME.md": contains a control character`},
		{"Duplicate", paths("data/**", "*.csv", "data/**"), `paths[2] "data/**": duplicate of paths[0]`},
		{"DuplicateIgnore", orchestrator.PathFilter{IgnorePaths: []string{"README.md", "README.md"}}, `ignore_paths[1] "README.md": duplicate of ignore_paths[0]`},
		{"TooMany", orchestrator.PathFilter{Paths: many}, fmt.Sprintf("paths has %d patterns; at most %d are allowed", len(many), orchestrator.PathPatternsMax)},
		{"TooManyIgnore", orchestrator.PathFilter{IgnorePaths: many}, "ignore_paths has 101 patterns"},
		{"TooLong", paths(long), fmt.Sprintf(`paths[0] %q: is %d bytes long; at most %d are allowed`, long, len(long), orchestrator.PathPatternBytesMax)},
		{"LeadingSlash", paths("/data/**"), `paths[0] "/data/**": must be relative to the repository's root, without a leading /: write "data/**"`},
		{"LeadingDotSlash", paths("./data/**"), `paths[0] "./data/**": must be relative to the repository's root, without a leading ./: write "data/**"`},
		{"TrailingSlash", paths("data/"), `paths[0] "data/": ends with / and so matches no file: write "data/**" for the files under it`},
		{"Negation", orchestrator.PathFilter{IgnorePaths: []string{"!data/**"}}, `ignore_paths[0] "!data/**": a leading ! (negation) is not supported`},
		{"PathsCheckedFirst", orchestrator.PathFilter{Paths: []string{"["}, IgnorePaths: []string{""}}, `paths[0] "[": syntax error in pattern`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.filter.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
			require.Contains(t, orchestrator.ErrorMessage(err), tc.wantErr)
		})
	}
}

func TestPathFilterEmpty(t *testing.T) {
	t.Parallel()
	cases := []struct {
		filter orchestrator.PathFilter
		want   bool
	}{
		{orchestrator.PathFilter{}, true},
		{orchestrator.PathFilter{Paths: []string{}, IgnorePaths: []string{}}, true},
		{paths("data/**"), false},
		{orchestrator.PathFilter{IgnorePaths: []string{"README.md"}}, false},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.filter.Empty(), "%+v", tc.filter)
	}
}

func TestMappingPathFilter(t *testing.T) {
	t.Parallel()
	m := orchestrator.Mapping{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}
	require.Equal(t, orchestrator.PathFilter{Paths: []string{"data/**"}, IgnorePaths: []string{"**/*.md"}}, m.PathFilter())
	require.True(t, (&orchestrator.Mapping{}).PathFilter().Empty())
}

// TestMappingValidatePaths: a mapping's validation checks its path filter, and names the mapping and the pattern.
func TestMappingValidatePaths(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name               string
		paths, ignorePaths []string
		wantErr            string // empty: valid
	}{
		{"None", nil, nil, ""},
		{"Both", []string{"data/**"}, []string{"README.md", "**/*.md"}, ""},
		{"BadIgnore", nil, []string{"["}, `mapping "ticket-classifier": ignore_paths[0] "[": syntax error in pattern`},
		{"BadPath", []string{"data/**", "data/["}, nil, `mapping "ticket-classifier": paths[1] "data/[": syntax error in pattern`},
		{"EmptyPath", []string{""}, nil, `mapping "ticket-classifier": paths[0] "": must not be empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := orchestrator.Mapping{Name: "ticket-classifier", Dataset: "acme/support-tickets", Command: []string{"true"},
				Paths: tc.paths, IgnorePaths: tc.ignorePaths}.WithDefaults()
			err := m.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, orchestrator.CodeInvalid, orchestrator.ErrorCode(err))
			require.Equal(t, tc.wantErr, orchestrator.ErrorMessage(err))
		})
	}
}

// paths returns a filter with only the paths given.
func paths(patterns ...string) orchestrator.PathFilter {
	return orchestrator.PathFilter{Paths: patterns}
}
