package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/retrainhq/orchestrator/orchestrator"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Settings of the runs and mappings commands, which talk to a running server's JSON API.
const (
	ServerURLDefault = "http://127.0.0.1:8080" // --server, ORCHESTRATOR_URL
	clientTimeout    = 30 * time.Second        // for each request, answer included
	maxAnswerBytes   = 32 << 20                // the most of an answer that is read
	revisionShortLen = 12                      // characters of a commit shown in tables
)

// runsUsage is the help of "orchestrator runs".
var runsUsage = `orchestrator runs: list, inspect, retry and cancel runs on a running server.

Usage:
  orchestrator runs list [--mapping M] [--dataset D] [--status S] [--trigger T] [--limit N] [--before ID]
  orchestrator runs show ID        the run, its attempts and the end of its log
  orchestrator runs retry ID       queue a new run of a finished run's mapping and revision
  orchestrator runs cancel ID      cancel a waiting run, or stop a running run's command

--status is one of ` + orchestrator.RunStatusNames() + `; --trigger is webhook or manual.
` + clientFlagsUsage

// mappingsUsage is the help of "orchestrator mappings".
const mappingsUsage = `orchestrator mappings: list, inspect, add and disable mappings on a running server.

Usage:
  orchestrator mappings list
  orchestrator mappings show NAME
  orchestrator mappings add NAME --dataset D [--ref R]... [--workdir W] [--env K=V]...
                            [--timeout 2h] [--max-attempts N] -- COMMAND [ARG]...
  orchestrator mappings disable NAME    stop triggering NAME; its runs are kept

The command after -- is an argv, run without a shell. The server replaces ${DATASET_REVISION} and the other run
variables in it, so single-quote them to keep your shell from expanding them first:

  orchestrator mappings add tickets --dataset acme/support-tickets --timeout 2h -- \
    python train.py --dataset '${DATASET_REPO}' --revision '${DATASET_REVISION}'

--ref (default refs/heads/main) and --env may be repeated. Mappings declared in the --config file of serve
cannot be disabled here: change the file.
` + clientFlagsUsage

// clientFlagsUsage describes the flags every runs and mappings command takes.
const clientFlagsUsage = `
Every command also takes:
  --server URL   the server's base URL (ORCHESTRATOR_URL, default ` + ServerURLDefault + `)
  --token TOKEN  the admin token; prefer ORCHESTRATOR_ADMIN_TOKEN, which keeps it out of your shell history
  --json         print the server's JSON answer instead of a table
`

// runRuns runs "orchestrator runs <command>".
func runRuns(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stderr, runsUsage)
		return errUsage
	}
	switch args[0] {
	case "list":
		return runsList(ctx, args[1:], getenv, stdout, stderr)
	case "show":
		return runsShow(ctx, args[1:], getenv, stdout, stderr)
	case "retry":
		return runsRetry(ctx, args[1:], getenv, stdout, stderr)
	case "cancel":
		return runsCancel(ctx, args[1:], getenv, stdout, stderr)
	}
	fmt.Fprintf(stderr, "orchestrator: unknown runs command %q\n\n%s", args[0], runsUsage)
	return errUsage
}

// runMappings runs "orchestrator mappings <command>".
func runMappings(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stderr, mappingsUsage)
		return errUsage
	}
	switch args[0] {
	case "list":
		return mappingsList(ctx, args[1:], getenv, stdout, stderr)
	case "show":
		return mappingsShow(ctx, args[1:], getenv, stdout, stderr)
	case "add":
		return mappingsAdd(ctx, args[1:], getenv, stdout, stderr)
	case "disable":
		return mappingsDisable(ctx, args[1:], getenv, stdout, stderr)
	}
	fmt.Fprintf(stderr, "orchestrator: unknown mappings command %q\n\n%s", args[0], mappingsUsage)
	return errUsage
}

// isHelp reports whether arg asks for the usage text instead of naming a subcommand.
func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

// command is one runs or mappings subcommand being parsed: its flags, including the ones every subcommand
// takes, and its synopsis for usage errors.
type command struct {
	fs       *flag.FlagSet
	synopsis string
	stderr   io.Writer
	getenv   func(string) string

	server    string
	token     string
	jsonOut   bool
	serverSet bool // --server was given on the command line, not taken from the environment
}

// newCommand returns a subcommand named like "runs list" with the flags every subcommand takes.
func newCommand(name, synopsis string, getenv func(string) string, stderr io.Writer) *command {
	c := &command{fs: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, stderr: stderr, getenv: getenv}
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  %s\n\nFlags:\n", synopsis)
		c.fs.PrintDefaults()
	}
	server := getenv("ORCHESTRATOR_URL")
	if server == "" {
		server = ServerURLDefault
	}
	c.fs.StringVar(&c.server, "server", server, "base `URL` of the server (ORCHESTRATOR_URL)")
	// No default from the environment here: the flag's default is printed by -h.
	c.fs.StringVar(&c.token, "token", "", "admin `TOKEN`; prefer ORCHESTRATOR_ADMIN_TOKEN, which stays out of shell history")
	c.fs.BoolVar(&c.jsonOut, "json", false, "print the server's JSON answer")
	return c
}

// parse parses args, with flags allowed before, between and after the positional arguments ("runs show 42
// --json"). It returns the positional arguments and, when args contain a "--" that ends the flags, everything
// after it (non-nil, possibly empty).
func (c *command) parse(args []string) (positional, afterDash []string, err error) {
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			afterDash = append([]string{}, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && a != "-" && !isInteger(a): // "-5" is a (bad) run ID, not a flag
			flags = append(flags, a)
			if c.takesValue(a) && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
	}
	if err := c.fs.Parse(flags); err != nil {
		return nil, nil, errUsage
	}
	c.fs.Visit(func(f *flag.Flag) { c.serverSet = c.serverSet || f.Name == "server" })
	return positional, afterDash, nil
}

// isInteger reports whether s is a whole number.
func isInteger(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// takesValue reports whether the flag argument arg ("--limit", not "--limit=5") consumes the next argument.
func (c *command) takesValue(arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	f := c.fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// usageError reports wrong positional arguments: the problem, then the synopsis.
func (c *command) usageError(format string, args ...any) error {
	fmt.Fprintf(c.stderr, "orchestrator %s: %s\nUsage:\n  %s\n", c.fs.Name(), fmt.Sprintf(format, args...), c.synopsis)
	return errUsage
}

// runID parses the single positional argument as a run ID.
func (c *command) runID(positional []string) (int64, error) {
	if len(positional) != 1 {
		return 0, c.usageError("expected one run ID, got %d arguments", len(positional))
	}
	id, err := strconv.ParseInt(positional[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, c.usageError("run ID must be a positive whole number, not %q", positional[0])
	}
	return id, nil
}

// mappingName checks that there is exactly one positional argument, the mapping's name.
func (c *command) mappingName(positional []string) (string, error) {
	if len(positional) != 1 {
		return "", c.usageError("expected one mapping name, got %d arguments", len(positional))
	}
	if positional[0] == "" {
		return "", c.usageError("the mapping name must not be empty")
	}
	return positional[0], nil
}

// client returns the API client configured by the flags and the environment.
func (c *command) client() (*apiClient, error) {
	base := strings.TrimRight(c.server, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q is not an http:// or https:// URL", c.server)
	}
	token := c.token
	if token == "" {
		token = c.getenv("ORCHESTRATOR_ADMIN_TOKEN")
	}
	return &apiClient{base: base, token: token, http: &http.Client{Timeout: clientTimeout}}, nil
}

// apiClient calls a running server's JSON API with the admin token.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// apiError is a non-2xx answer of the server.
type apiError struct {
	Status  int
	Message string
}

// Error returns the status code and the server's message, as in "404: run 7 not found".
func (e *apiError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

// do sends a request with an optional JSON body and returns the status and body of a 2xx answer. Any other
// answer is an *apiError carrying the server's "error" message.
func (c *apiClient) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var reqBody io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("encode request: %w", err)
		}
		reqBody = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reqBody)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, c.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("read the answer of %s %s: %w", method, c.base+path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, nil, &apiError{Status: resp.StatusCode, Message: errorMessage(resp.StatusCode, data)}
	}
	return resp.StatusCode, data, nil
}

// transportError explains a request that got no answer, naming the server.
func (c *apiClient) transportError(err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot connect to %s (%w): is the server running? Point --server or ORCHESTRATOR_URL at it",
			c.base, syscall.ECONNREFUSED)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("no answer from %s within %s: %w", c.base, clientTimeout, err)
	}
	return fmt.Errorf("cannot reach %s (set --server or ORCHESTRATOR_URL): %w", c.base, err)
}

// errorMessage returns the "error" field of an error answer, or a short form of whatever else it is.
func errorMessage(status int, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	text := strings.TrimSpace(string(body))
	if text == "" || len(text) > 200 || strings.HasPrefix(text, "<") {
		return http.StatusText(status)
	}
	return text
}

// get sends a GET and decodes the answer into v; with --json it prints the answer as it came instead.
func (c *command) get(ctx context.Context, api *apiClient, path string, v any, stdout io.Writer) (printed bool, err error) {
	_, body, err := api.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return false, err
	}
	return c.answer(body, v, stdout)
}

// answer prints body as is with --json, and otherwise decodes it into v.
func (c *command) answer(body []byte, v any, stdout io.Writer) (printed bool, err error) {
	if c.jsonOut {
		_, err := stdout.Write(body)
		if err == nil && !bytes.HasSuffix(body, []byte("\n")) {
			_, err = io.WriteString(stdout, "\n")
		}
		return true, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return false, fmt.Errorf("decode the server's answer: %w", err)
	}
	return false, nil
}

// apiRun is a run as the JSON API returns it: the domain type, whose JSON is the API's.
type apiRun = orchestrator.Run

// apiAttempt is one attempt of a run as the JSON API returns it.
type apiAttempt = orchestrator.Attempt

// apiRunDetail is the answer of GET /api/v1/runs/{id}.
type apiRunDetail struct {
	apiRun
	Attempts        []apiAttempt `json:"attempts"`
	Log             string       `json:"log"`
	LogOmittedBytes int64        `json:"log_omitted_bytes"`
}

// apiMapping is a mapping as the JSON API returns it.
type apiMapping struct {
	Name        string            `json:"name"`
	Dataset     string            `json:"dataset"`
	Refs        []string          `json:"refs"`
	Command     []string          `json:"command"`
	Workdir     string            `json:"workdir"`
	Env         map[string]string `json:"env"`
	Timeout     string            `json:"timeout"`
	MaxAttempts int               `json:"max_attempts"`
	// Notify holds the targets with their URLs shortened, as the API shows them.
	Notify    []orchestrator.NotifyTarget `json:"notify"`
	Source    string                      `json:"source"`
	Enabled   bool                        `json:"enabled"`
	CreatedAt time.Time                   `json:"created_at"`
	UpdatedAt time.Time                   `json:"updated_at"`
}

// runListFilters are the flags of "runs list" that become the query string.
var runListFilters = []string{"mapping", "dataset", "status", "trigger", "limit"}

// runsList runs "runs list": GET /api/v1/runs.
func runsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs list", "orchestrator runs list [--mapping M] [--dataset D] [--status S] [--trigger T] [--limit N] [--before ID]", getenv, stderr)
	c.fs.String("mapping", "", "only runs of the mapping `NAME`")
	c.fs.String("dataset", "", "only runs of the `DATASET`, such as acme/support-tickets")
	c.fs.String("status", "", "only runs in `STATUS`: "+orchestrator.RunStatusNames())
	c.fs.String("trigger", "", "only runs started by `TRIGGER`: webhook or manual")
	c.fs.Int("limit", 0, "at most `N` runs (server default 50, at most 500)")
	before := c.fs.Int64("before", 0, "only runs older than run `ID` (the next page)")
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return c.usageError("unexpected argument %q", positional[0])
	}
	q := url.Values{}
	for _, name := range runListFilters {
		if v := c.fs.Lookup(name).Value.String(); v != "" && v != "0" {
			q.Set(name, v)
		}
	}
	if *before > 0 {
		q.Set("before", strconv.FormatInt(*before, 10))
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	path := "/api/v1/runs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var list struct {
		Runs       []apiRun `json:"runs"`
		NextBefore *int64   `json:"next_before"`
	}
	if printed, err := c.get(ctx, api, path, &list, stdout); printed || err != nil {
		return err
	}
	if len(list.Runs) == 0 {
		fmt.Fprintln(stdout, "no runs")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tMAPPING\tDATASET\tREF\tREVISION\tATTEMPT\tCREATED")
	for _, r := range list.Runs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", r.ID, r.Status, r.Mapping, r.Dataset, r.Ref,
			shortRevision(r.Revision), r.Attempt, r.MaxAttempts, formatTime(r.CreatedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if list.NextBefore != nil {
		next := []string{"orchestrator", "runs", "list"}
		if c.serverSet {
			next = append(next, "--server", shellQuote(c.server))
		}
		for _, name := range runListFilters {
			if v, ok := q[name]; ok {
				next = append(next, "--"+name, shellQuote(v[0]))
			}
		}
		next = append(next, "--before", strconv.FormatInt(*list.NextBefore, 10))
		fmt.Fprintf(stdout, "more: %s\n", strings.Join(next, " "))
	}
	return nil
}

// runsShow runs "runs show ID": GET /api/v1/runs/{id}.
func runsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs show", "orchestrator runs show ID", getenv, stderr)
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	id, err := c.runID(positional)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var d apiRunDetail
	if printed, err := c.get(ctx, api, fmt.Sprintf("/api/v1/runs/%d", id), &d, stdout); printed || err != nil {
		return err
	}
	return printRun(stdout, &d)
}

// printRun writes a run as "key: value" lines, its attempts, and the end of its log.
func printRun(w io.Writer, d *apiRunDetail) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(key, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", key, value)
	}
	line("id", strconv.FormatInt(d.ID, 10))
	line("status", string(d.Status))
	line("mapping", d.Mapping)
	line("dataset", d.Dataset)
	line("ref", d.Ref)
	line("revision", d.Revision)
	line("old_revision", d.OldRevision)
	line("trigger", d.Trigger)
	line("retry_of", formatID(d.RetryOf))
	line("delivery_id", formatID(d.DeliveryID))
	line("attempt", fmt.Sprintf("%d/%d", d.Attempt, d.MaxAttempts))
	line("exit_code", formatExitCode(d.ExitCode))
	line("signal", d.Signal)
	line("error", d.Error)
	line("created", formatTime(d.CreatedAt))
	line("started", formatTimePtr(d.StartedAt))
	line("finished", formatTimePtr(d.FinishedAt))
	if d.CancelRequestedAt != nil {
		line("cancel_requested", formatTimePtr(d.CancelRequestedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Attempts) == 0 {
		_, err := fmt.Fprintln(w, "\nno attempts yet")
		return err
	}
	fmt.Fprintln(w, "\nattempts:")
	for _, a := range d.Attempts {
		result := string(a.Status)
		if a.ExitCode != nil {
			result += fmt.Sprintf(", exit %d", *a.ExitCode)
		}
		if a.Signal != "" {
			result += ", signal " + a.Signal
		}
		result += fmt.Sprintf(", %d log bytes", a.LogBytes)
		if a.LogDropped > 0 {
			result += fmt.Sprintf(" (%d dropped)", a.LogDropped)
		}
		fmt.Fprintf(w, "  %d: %s, %s to %s\n", a.Number, result, formatTime(a.StartedAt), formatTimePtr(a.FinishedAt))
		fmt.Fprintf(w, "     argv: %s\n", shellJoin(a.Argv))
		if a.Error != "" {
			fmt.Fprintf(w, "     error: %s\n", a.Error)
		}
	}
	header := fmt.Sprintf("last %d bytes", len(d.Log))
	if d.LogOmittedBytes > 0 {
		header += fmt.Sprintf(", %d earlier bytes not shown", d.LogOmittedBytes)
	}
	fmt.Fprintf(w, "\n--- log (%s) ---\n", header)
	_, err := io.WriteString(w, d.Log)
	if err == nil && d.Log != "" && !strings.HasSuffix(d.Log, "\n") {
		_, err = io.WriteString(w, "\n")
	}
	return err
}

// runsRetry runs "runs retry ID": POST /api/v1/runs/{id}/retry.
func runsRetry(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs retry", "orchestrator runs retry ID", getenv, stderr)
	res, err := c.postRunAction(ctx, args, "retry", stdout)
	if res == nil || err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %d queued (retry of %d)\n", res.run.ID, res.id)
	return err
}

// runsCancel runs "runs cancel ID": POST /api/v1/runs/{id}/cancel.
func runsCancel(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("runs cancel", "orchestrator runs cancel ID", getenv, stderr)
	res, err := c.postRunAction(ctx, args, "cancel", stdout)
	if res == nil || err != nil {
		return err
	}
	if res.status == http.StatusAccepted {
		_, err = fmt.Fprintf(stdout, "run %d: cancel requested, stopping its command\n", res.id)
		return err
	}
	_, err = fmt.Fprintf(stdout, "run %d cancelled\n", res.id)
	return err
}

// runAction is the answer to an action on a run.
type runAction struct {
	id     int64 // the run the action was asked for
	status int   // the answer's HTTP status
	run    apiRun
}

// postRunAction posts action for the run whose id args name: POST /api/v1/runs/{id}/{action}. It returns nil
// when there is nothing left to print: the answer was printed as it came (--json), or an error.
func (c *command) postRunAction(ctx context.Context, args []string, action string, stdout io.Writer) (*runAction, error) {
	positional, _, err := c.parse(args)
	if err != nil {
		return nil, err
	}
	id, err := c.runID(positional)
	if err != nil {
		return nil, err
	}
	api, err := c.client()
	if err != nil {
		return nil, err
	}
	status, body, err := api.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/runs/%d/%s", id, action), nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Run apiRun `json:"run"`
	}
	if printed, err := c.answer(body, &out, stdout); printed || err != nil {
		return nil, err
	}
	return &runAction{id: id, status: status, run: out.Run}, nil
}

// mappingsList runs "mappings list": GET /api/v1/mappings.
func mappingsList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings list", "orchestrator mappings list", getenv, stderr)
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return c.usageError("unexpected argument %q", positional[0])
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var list struct {
		Mappings []apiMapping `json:"mappings"`
	}
	if printed, err := c.get(ctx, api, "/api/v1/mappings", &list, stdout); printed || err != nil {
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
			yesNo(m.Enabled), shortDuration(m.Timeout), shellJoin(m.Command))
	}
	return tw.Flush()
}

// mappingsShow runs "mappings show NAME": GET /api/v1/mappings/{name}.
func mappingsShow(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings show", "orchestrator mappings show NAME", getenv, stderr)
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	name, err := c.mappingName(positional)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var out struct {
		Mapping apiMapping `json:"mapping"`
	}
	if printed, err := c.get(ctx, api, "/api/v1/mappings/"+url.PathEscape(name), &out, stdout); printed || err != nil {
		return err
	}
	return printMapping(stdout, &out.Mapping)
}

// printMapping writes a mapping as "key: value" lines.
func printMapping(w io.Writer, m *apiMapping) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(key, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", key, value)
	}
	line("name", m.Name)
	line("dataset", m.Dataset)
	line("refs", strings.Join(m.Refs, ", "))
	line("command", shellJoin(m.Command))
	line("workdir", m.Workdir)
	keys := make([]string, 0, len(m.Env))
	for k := range m.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, shellQuote(k+"="+m.Env[k]))
	}
	line("env", strings.Join(env, " "))
	line("timeout", shortDuration(m.Timeout))
	line("max_attempts", strconv.Itoa(m.MaxAttempts))
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
	line("notify", strings.Join(targets, "; "))
	line("source", m.Source)
	line("enabled", yesNo(m.Enabled))
	line("created", formatTime(m.CreatedAt))
	line("updated", formatTime(m.UpdatedAt))
	return tw.Flush()
}

// mappingRequest is the body of POST /api/v1/mappings; empty settings are left to the server's defaults.
type mappingRequest struct {
	Name        string            `json:"name"`
	Dataset     string            `json:"dataset"`
	Refs        []string          `json:"refs,omitempty"`
	Command     []string          `json:"command"`
	Workdir     string            `json:"workdir,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Timeout     string            `json:"timeout,omitempty"`
	MaxAttempts int               `json:"max_attempts,omitempty"`
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

// mappingsAdd runs "mappings add NAME ... -- COMMAND...": POST /api/v1/mappings.
func mappingsAdd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings add", "orchestrator mappings add NAME --dataset D [--ref R]... [--workdir W] [--env K=V]... "+
		"[--timeout 2h] [--max-attempts N] -- COMMAND [ARG]...", getenv, stderr)
	var req mappingRequest
	var refs stringsFlag
	env := envFlag{}
	c.fs.StringVar(&req.Dataset, "dataset", "", "the `DATASET` to watch: a repository name such as acme/tickets, or a glob such as acme/* (required)")
	c.fs.Var(&refs, "ref", "a `REF` to watch, or a glob; repeat for several (server default refs/heads/main)")
	c.fs.StringVar(&req.Workdir, "workdir", "", "`DIR` the command runs in, on the server")
	c.fs.Var(env, "env", "`KEY=VALUE` added to the command's environment; repeat for several")
	c.fs.StringVar(&req.Timeout, "timeout", "", "longest a run may take, a `DURATION` such as 90m or 2h (server default 6h)")
	c.fs.IntVar(&req.MaxAttempts, "max-attempts", 0, "`N` attempts per run at most, including the first (server default 2)")
	positional, command, err := c.parse(args)
	if err != nil {
		return err
	}
	if req.Name, err = c.mappingName(positional); err != nil {
		return err
	}
	if req.Dataset == "" {
		return c.usageError("--dataset is required")
	}
	if len(command) == 0 {
		return c.usageError("give the command after --, for example: -- python train.py --revision '${DATASET_REVISION}'")
	}
	req.Refs, req.Command = refs, command
	if len(env) > 0 {
		req.Env = env
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	_, body, err := api.do(ctx, http.MethodPost, "/api/v1/mappings", req)
	if err != nil {
		return err
	}
	var out struct {
		Mapping apiMapping `json:"mapping"`
	}
	if printed, err := c.answer(body, &out, stdout); printed || err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mapping %s created\n\n", out.Mapping.Name)
	return printMapping(stdout, &out.Mapping)
}

// mappingsDisable runs "mappings disable NAME": DELETE /api/v1/mappings/{name}.
func mappingsDisable(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := newCommand("mappings disable", "orchestrator mappings disable NAME", getenv, stderr)
	positional, _, err := c.parse(args)
	if err != nil {
		return err
	}
	name, err := c.mappingName(positional)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	_, body, err := api.do(ctx, http.MethodDelete, "/api/v1/mappings/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	var out struct {
		Mapping apiMapping `json:"mapping"`
	}
	if printed, err := c.answer(body, &out, stdout); printed || err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "mapping %s disabled (its runs are kept)\n", name)
	return err
}

// shortRevision returns the first 12 characters of a commit, enough to recognise it in a table.
func shortRevision(rev string) string {
	if len(rev) > revisionShortLen {
		return rev[:revisionShortLen]
	}
	return rev
}

// formatTime writes t in RFC 3339 in UTC, and the zero time as "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// formatTimePtr is formatTime for an optional time.
func formatTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return formatTime(*t)
}

// formatID writes an optional ID, "" when absent.
func formatID(id *int64) string {
	if id == nil {
		return ""
	}
	return strconv.FormatInt(*id, 10)
}

// formatExitCode writes an optional exit code, "" when absent.
func formatExitCode(code *int) string {
	if code == nil {
		return ""
	}
	return strconv.Itoa(*code)
}

// yesNo writes a boolean for people.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// shortDuration drops the zero minutes and seconds of a Go duration: "2h0m0s" becomes "2h", "1h30m0s" "1h30m".
func shortDuration(s string) string {
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it, so that printed commands can be pasted back.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellJoin writes an argv as a shell command line.
func shellJoin(argv []string) string {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}
