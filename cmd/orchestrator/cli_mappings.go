package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// mappingsUsage is the help of "orchestrator mappings".
const mappingsUsage = `orchestrator mappings: list, inspect, add, check and disable mappings on a running server.

Usage:
  orchestrator mappings list
  orchestrator mappings show NAME
  orchestrator mappings add NAME --dataset D [--ref R]... [--path P]... [--ignore-path P]...
                            [--workdir W] [--env K=V]... [--timeout 2h] [--max-attempts N] -- COMMAND [ARG]...
  orchestrator mappings check NAME --revision SHA [--old SHA] [--dataset D]
                                        would this commit trigger NAME, and why (nothing is queued)
  orchestrator mappings disable NAME    stop triggering NAME; its runs are kept

The command after -- is an argv, run without a shell. The server replaces ${DATASET_REVISION} and the other run
variables in it, so single-quote them to keep your shell from expanding them first:

  orchestrator mappings add tickets --dataset acme/support-tickets --timeout 2h -- \
    python train.py --dataset '${DATASET_REPO}' --revision '${DATASET_REVISION}'

--ref (default refs/heads/main), --path, --ignore-path and --env may be repeated. --path and --ignore-path are
globs of the repository's files, such as 'data/**' or '**/*.md' (quote them from your shell): a run needs a
changed file matching a --path (none: every file) that no --ignore-path matches. Mappings declared in the
--config file of serve cannot be disabled here: change the file. check compares the commit with --old (default:
its parent on the Hub) and says which files changed and whether NAME watches them.
` + clientFlagsUsage

// runMappings runs "orchestrator mappings <command>".
func runMappings(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	mappings := &commandGroup{name: "mappings", usage: mappingsUsage, subcommands: map[string]subcommand{
		"list": mappingsList, "show": mappingsShow, "add": mappingsAdd, "check": mappingsCheck,
		"disable": mappingsDisable,
	}}
	return mappings.run(ctx, args, getenv, stdout, stderr)
}

// mappingsList runs "mappings list": GET /api/v1/mappings.
func mappingsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings list", "orchestrator mappings list", getenv, stderr)
	client, err := c.noArguments(args)
	if err != nil {
		return err
	}
	var list api.MappingList
	if printed, err := c.get(ctx, client, "/api/v1/mappings", &list, stdout); printed || err != nil {
		return err
	}
	if len(list.Mappings) == 0 {
		fmt.Fprintln(stdout, "no mappings")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDATASET\tREFS\tSOURCE\tENABLED\tTIMEOUT\tCOMMAND")
	for _, m := range list.Mappings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Dataset, strings.Join(m.Refs, ","), m.Source,
			yesNo(m.Enabled), shortDuration(string(m.Timeout)), orchestrator.ShellJoin(m.Command))
	}
	return tw.Flush()
}

// mappingsShow runs "mappings show NAME": GET /api/v1/mappings/{name}.
func mappingsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings show", "orchestrator mappings show NAME", getenv, stderr)
	name, client, err := c.mappingArgument(args)
	if err != nil {
		return err
	}
	var res api.MappingResult
	if printed, err := c.get(ctx, client, "/api/v1/mappings/"+url.PathEscape(name), &res, stdout); printed || err != nil {
		return err
	}
	return printMapping(stdout, &res.Mapping, res.Cost)
}

// printMapping writes a mapping as "key: value" lines, with its cost when known.
func printMapping(w io.Writer, m *api.Mapping, cost string) error {
	facts := newFactWriter(w)
	facts.line("name", m.Name)
	facts.line("dataset", m.Dataset)
	facts.line("refs", strings.Join(m.Refs, ", "))
	facts.line("paths", cmp.Or(strings.Join(m.Paths, ", "), "every file"))
	facts.line("ignore_paths", cmp.Or(strings.Join(m.IgnorePaths, ", "), "none"))
	facts.line("command", orchestrator.ShellJoin(m.Command))
	facts.line("workdir", m.Workdir)
	keys := make([]string, 0, len(m.Env))
	for k := range m.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, orchestrator.ShellQuote(k+"="+m.Env[k]))
	}
	facts.line("env", strings.Join(env, " "))
	facts.line("timeout", shortDuration(string(m.Timeout)))
	facts.line("max_attempts", strconv.Itoa(m.MaxAttempts))
	targets := make([]string, 0, len(m.Notify))
	for _, t := range m.Notify {
		on := make([]string, len(t.On))
		for i, e := range t.On {
			on[i] = string(e)
		}
		target := fmt.Sprintf("%s %s on %s", t.URL, t.Format, strings.Join(on, ","))
		if t.SecretEnv != "" {
			target += " signed with $" + t.SecretEnv
		}
		targets = append(targets, target)
	}
	facts.line("notify", strings.Join(targets, "; "))
	executorFacts(facts, m, cost)
	facts.line("source", string(m.Source))
	facts.line("enabled", yesNo(m.Enabled))
	facts.line("created", formatTime(m.CreatedAt))
	facts.line("updated", formatTime(m.UpdatedAt))
	return facts.flush()
}

// mappingsAdd runs "mappings add NAME ... -- COMMAND...": POST /api/v1/mappings. Settings without a flag are
// left out of the request, for the server's defaults.
func mappingsAdd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings add", "orchestrator mappings add NAME --dataset D [--ref R]... [--path P]... [--ignore-path P]... "+
		"[--workdir W] [--env K=V]... [--timeout 2h] [--max-attempts N] -- COMMAND [ARG]...", getenv, stderr)
	var spec orchestrator.MappingSpec
	var refs, paths, ignorePaths stringsFlag
	env := envFlag{}
	c.fs.StringVar(&spec.Dataset, "dataset", "", "the `DATASET` to watch: a repository name such as acme/tickets, or a glob such as acme/* (required)")
	c.fs.Var(&refs, "ref", "a `REF` to watch, or a glob; repeat for several (server default refs/heads/main)")
	c.fs.Var(&paths, "path", "a `GLOB` of the files whose change starts a run, such as 'data/**'; repeat for several (default: every file)")
	c.fs.Var(&ignorePaths, "ignore-path", "a `GLOB` of the files whose change alone never starts a run, such as '**/*.md'; repeat for several")
	c.fs.StringVar(&spec.Workdir, "workdir", "", "`DIR` the command runs in, on the server")
	c.fs.Var(env, "env", "`KEY=VALUE` added to the command's environment; repeat for several")
	timeout := c.fs.String("timeout", "", "longest a run may take, a `DURATION` such as 90m or 2h (server default 6h)")
	c.fs.IntVar(&spec.MaxAttempts, "max-attempts", 0, "`N` attempts per run at most, including the first (server default 2)")
	positional, command, err := c.parse(args)
	if err != nil {
		return err
	}
	if spec.Name, err = c.mappingName(positional); err != nil {
		return err
	}
	if spec.Dataset == "" {
		return c.usageError("--dataset is required")
	}
	if len(command) == 0 {
		return c.usageError("give the command after --, for example: -- python train.py --revision '${DATASET_REVISION}'")
	}
	spec.Refs, spec.Command, spec.Timeout = refs, command, orchestrator.Duration(*timeout)
	spec.Paths, spec.IgnorePaths = paths, ignorePaths
	if len(env) > 0 {
		spec.Env = env
	}
	client, err := c.client()
	if err != nil {
		return err
	}
	var res api.MappingResult
	if _, printed, err := c.call(ctx, client, http.MethodPost, "/api/v1/mappings", spec, &res, stdout); printed || err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mapping %s created\n\n", res.Mapping.Name)
	return printMapping(stdout, &res.Mapping, res.Cost)
}

// mappingsDisable runs "mappings disable NAME": DELETE /api/v1/mappings/{name}.
func mappingsDisable(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings disable", "orchestrator mappings disable NAME", getenv, stderr)
	name, client, err := c.mappingArgument(args)
	if err != nil {
		return err
	}
	var res api.MappingResult
	if _, printed, err := c.call(ctx, client, http.MethodDelete, "/api/v1/mappings/"+url.PathEscape(name), nil, &res, stdout); printed || err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "mapping %s disabled (its runs are kept)\n", name)
	return err
}

// stringsFlag is a flag that may be repeated, collecting every value.
type stringsFlag []string

// String returns the values joined by commas.
func (f *stringsFlag) String() string { return strings.Join(*f, ",") }

// Set adds one value.
func (f *stringsFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

// envFlag is a repeatable KEY=VALUE flag.
type envFlag map[string]string

// String returns the entries as KEY=VALUE, sorted and joined by commas.
func (f envFlag) String() string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + f[k]
	}
	return strings.Join(keys, ",")
}

// Set adds one KEY=VALUE entry; a key given twice is an error.
func (f envFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	if _, dup := f[k]; dup {
		return fmt.Errorf("%s is given twice", k)
	}
	f[k] = val
	return nil
}
