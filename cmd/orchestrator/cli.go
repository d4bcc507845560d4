package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Settings of the runs and mappings commands, which talk to a running server's JSON API.
const (
	ServerURLDefault = "http://127.0.0.1:8080" // --server, ORCHESTRATOR_URL
	clientTimeout    = 30 * time.Second        // for each request, answer included
	maxAnswerBytes   = 32 << 20                // the most of an answer that is read
	revisionShortLen = 12                      // characters of a commit shown in tables
)

// clientFlagsUsage describes the flags every runs and mappings command takes.
const clientFlagsUsage = `
Every command also takes:
  --server URL   the server's base URL (ORCHESTRATOR_URL, default ` + ServerURLDefault + `)
  --token TOKEN  the admin token; prefer ORCHESTRATOR_ADMIN_TOKEN, which keeps it out of your shell history
  --json         print the server's JSON answer instead of a table
`

// commandGroup is a command of subcommands, such as "orchestrator runs".
type commandGroup struct {
	name        string
	usage       string
	subcommands map[string]subcommand
}

// subcommand runs one subcommand of a group with the arguments after its name.
type subcommand func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// run runs the subcommand that args name, or prints the group's usage.
func (g *commandGroup) run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stderr, g.usage)
		return errUsage
	}
	if sub, ok := g.subcommands[args[0]]; ok {
		return sub(ctx, args[1:], getenv, stdout, stderr)
	}
	fmt.Fprintf(stderr, "orchestrator: unknown %s command %q\n\n%s", g.name, args[0], g.usage)
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

// noArguments parses args of a subcommand that takes no positional argument and returns the API client.
func (c *command) noArguments(args []string) (*apiClient, error) {
	positional, _, err := c.parse(args)
	if err != nil {
		return nil, err
	}
	if len(positional) > 0 {
		return nil, c.usageError("unexpected argument %q", positional[0])
	}
	return c.client()
}

// runArgument parses args of a subcommand that takes one run ID and returns the ID and the API client.
func (c *command) runArgument(args []string) (int64, *apiClient, error) {
	positional, _, err := c.parse(args)
	if err != nil {
		return 0, nil, err
	}
	if len(positional) != 1 {
		return 0, nil, c.usageError("expected one run ID, got %d arguments", len(positional))
	}
	id, err := strconv.ParseInt(positional[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, nil, c.usageError("run ID must be a positive whole number, not %q", positional[0])
	}
	client, err := c.client()
	return id, client, err
}

// mappingArgument parses args of a subcommand that takes one mapping name and returns the name and the API
// client.
func (c *command) mappingArgument(args []string) (string, *apiClient, error) {
	positional, _, err := c.parse(args)
	if err != nil {
		return "", nil, err
	}
	name, err := c.mappingName(positional)
	if err != nil {
		return "", nil, err
	}
	client, err := c.client()
	return name, client, err
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

// call sends a request with an optional JSON body and decodes the answer into v, one of package api's types;
// with --json it prints the answer as it came instead (printed). It returns the answer's status.
func (c *command) call(ctx context.Context, client *apiClient, method, path string, body, v any, stdout io.Writer) (status int, printed bool, err error) {
	status, data, err := client.do(ctx, method, path, body)
	if err != nil {
		return 0, false, err
	}
	if c.jsonOut {
		_, err := stdout.Write(data)
		if err == nil && !bytes.HasSuffix(data, []byte("\n")) {
			_, err = io.WriteString(stdout, "\n")
		}
		return status, true, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return status, false, fmt.Errorf("decode the server's answer: %w", err)
	}
	return status, false, nil
}

// get sends a GET and decodes the answer into v, or prints it with --json (printed).
func (c *command) get(ctx context.Context, client *apiClient, path string, v any, stdout io.Writer) (printed bool, err error) {
	_, printed, err = c.call(ctx, client, http.MethodGet, path, nil, v, stdout)
	return printed, err
}
