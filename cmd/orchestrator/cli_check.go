package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// mappingsCheck runs "mappings check NAME --revision SHA [--old SHA] [--dataset D]":
// POST /api/v1/mappings/{name}/check. It says whether the commit would trigger the mapping, and why; nothing is
// queued.
func mappingsCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings check", "orchestrator mappings check NAME --revision SHA [--old SHA] [--dataset D]", getenv, stderr)
	var req api.MappingCheckRequest
	c.fs.StringVar(&req.Revision, "revision", "", "the commit `SHA` (or branch) to check (required)")
	c.fs.StringVar(&req.OldRevision, "old", "", "the `SHA` to compare with (default: the commit's parent on the Hub)")
	c.fs.StringVar(&req.Dataset, "dataset", "", "the `DATASET`, for a mapping that watches a pattern such as acme/*")
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	name, err := c.mappingName(positional)
	if err != nil {
		return err
	}
	if req.Revision == "" {
		return c.usageError("--revision is required")
	}
	client, err := c.client()
	if err != nil {
		return err
	}
	var res api.MappingCheck
	path := "/api/v1/mappings/" + url.PathEscape(name) + "/check"
	if _, printed, err := c.call(ctx, client, http.MethodPost, path, req, &res, stdout); printed || err != nil {
		return err
	}
	return printMappingCheck(stdout, &res)
}

// printMappingCheck writes the answer of a check: the verdict and its reason, then the changed files.
func printMappingCheck(w io.Writer, res *api.MappingCheck) error {
	f := res.Files
	verdict := "would trigger a run"
	if !res.Trigger {
		verdict = "would not trigger a run"
	}
	facts := newFactWriter(w)
	facts.line("mapping", res.Mapping)
	facts.line("dataset", res.Dataset)
	facts.line("revision", res.Revision)
	old := res.OldRevision
	if old == "" {
		old = "(none: every file counts as added)"
	}
	facts.line("compared with", old)
	facts.line("verdict", verdict)
	facts.line("reason", f.Reason)
	if f.Unknown != "" {
		facts.line("unknown", f.Unknown)
	} else {
		facts.line("changed", fmt.Sprintf("%d files: %d added, %d modified, %d removed", f.Total, f.Added, f.Modified, f.Removed))
	}
	if err := facts.flush(); err != nil {
		return err
	}
	if len(f.Files) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANGE\tSIZE\tPATH")
	for _, c := range f.Files {
		size := c.Size
		if c.Change == orchestrator.FileRemoved {
			size = c.OldSize
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", c.Change, size, c.Path)
	}
	if len(f.Files) < f.Total {
		fmt.Fprintf(tw, "…\t\t%d more\n", f.Total-len(f.Files))
	}
	return tw.Flush()
}
