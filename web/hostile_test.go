package web_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/jobs/jobstest"
	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/orchestrator/dbtest"
	"github.com/retrainhq/orchestrator/web"
)

// hostileMaxBody is the production default body limit, which the catalogue's size cases are measured against.
const hostileMaxBody = web.MaxBodyBytesDefault

// shellRef is a ref made of shell syntax. Every '/' in it keeps it out of refs/heads/*, so the "shell" mapping
// watches it literally: it has no path.Match metacharacter.
const shellRef = "refs/heads/$(touch /tmp/x);rm -rf /"

// malformedSha is the reason recorded for a newSha that is not a full commit id.
const malformedSha = "malformed newSha: not 40 lowercase hexadecimal characters"

// hostileMappings are the mappings the catalogue's server watches; each watches its own datasets, so that the
// decisions of a delivery depend on its repository only.
func hostileMappings() []orchestrator.Mapping {
	return []orchestrator.Mapping{
		ticketsMapping(), // acme/support-tickets, refs/heads/main
		orchestrator.Mapping{Name: "branches", Dataset: "acme/branches", Refs: []string{"refs/heads/*"},
			Command: []string{"true"}, Enabled: true}.WithDefaults(),
		orchestrator.Mapping{Name: "shell", Dataset: "acme/shell", Refs: []string{shellRef},
			Command: []string{"true"}, Enabled: true}.WithDefaults(),
		orchestrator.Mapping{Name: "evil", Dataset: "evil/*", Command: []string{"true"}, Enabled: true}.WithDefaults(),
	}
}

// setupHostile serves the web handler with the production body limit (setup uses 64 KiB) on a fresh schema.
// Its River client is not started: queued runs stay queued, so the rows a delivery writes are exactly what the
// handler wrote.
func setupHostile(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	pool, _ := dbtest.NewMigratedPool(t)
	store := orchestrator.NewStore(pool)
	client := jobstest.NewClient(t, pool, store, jobs.ClientConfig{Logger: quietLogger})
	_, err := store.MappingSync(ctx, hostileMappings())
	require.NoError(t, err)
	srv, err := web.New(web.Config{Store: store, WebhookSecret: testSecret, Logger: quietLogger})
	require.NoError(t, err)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &testBundle{pool: pool, store: store, river: client, server: ts}
}

// hsha returns a distinct, well-formed commit id for n: cases that queue runs use their own, so that no case
// is a duplicate of another.
func hsha(n int) string { return fmt.Sprintf("%040x", n) }

// jq quotes s as a JSON string.
func jq(s string) string {
	data, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// hostileDelivery is a content update of repo (raw JSON) with the given updatedRefs entries (raw JSON).
func hostileDelivery(repo string, refs ...string) string {
	return `{"event":{"scope":"repo.content","action":"update"},` +
		`"repo":{"type":"dataset","name":` + repo + `,"id":"66a1f0c2b9e4d3a1f2c3d4e5","headSha":"` + hsha(0xfff) + `",` +
		`"private":false,"owner":{"id":"62b1e8c7d4a3f2e1c0b9a8d7"}},` +
		`"updatedRefs":[` + strings.Join(refs, ",") + `],"webhook":{"id":"6650e8d1c2b3a4f5e6d7c8b9","version":3}}`
}

// hostileRef is an updatedRefs entry; name is raw JSON, newSha a plain string.
func hostileRef(name, newSha string) string {
	return `{"ref":` + name + `,"oldSha":"` + hsha(0xeee) + `","newSha":"` + newSha + `"}`
}

// tickets is a delivery of a new commit on acme/support-tickets' main branch, which the tickets mapping runs.
func tickets(n int) string {
	return hostileDelivery(`"acme/support-tickets"`, hostileRef(`"refs/heads/main"`, hsha(n)))
}

// edit replaces the first old in body with new; old must be there.
func edit(body, old, new string) string {
	if !strings.Contains(body, old) {
		panic(fmt.Sprintf("edit: %q is not in %s", old, body))
	}
	return strings.Replace(body, old, new, 1)
}

// padTo grows a JSON object with an ignored field until it is exactly size bytes long.
func padTo(body string, size int) string {
	const open, closing = `,"pad":"`, `"}`
	n := size - (len(body) - 1) - len(open) - len(closing)
	if n < 0 {
		panic("padTo: body already too large")
	}
	return body[:len(body)-1] + open + strings.Repeat("x", n) + closing
}

func gzipped(s string) string {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(s))
	_ = zw.Close()
	return buf.String()
}

// manyRefs is a delivery of acme/support-tickets with main and n-1 other branches.
func manyRefs(n int) string {
	refs := make([]string, 0, n)
	refs = append(refs, hostileRef(`"refs/heads/main"`, hsha(900)))
	for i := 1; i < n; i++ {
		refs = append(refs, fmt.Sprintf(`{"ref":"refs/heads/b%05d","oldSha":null,"newSha":"%s"}`, i, hsha(100000+i)))
	}
	return hostileDelivery(`"acme/support-tickets"`, refs...)
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// hostileRows is what one request wrote, found through the address it came from.
type hostileRows struct {
	Deliveries, Refs, Decisions, Runs, Jobs int
}

// hostileCase is one request of the catalogue.
type hostileCase struct {
	name   string
	method string      // POST when empty
	path   string      // appended to /webhooks/huggingface
	header http.Header // the right X-Webhook-Secret when nil
	body   string

	wantStatus int
	// wantError are parts of the error message of a 4xx answer.
	wantError []string
	// wantRows are the rows a 200 wrote; a 4xx writes none.
	wantRows hostileRows
	// wantReasons are the reasons of the decisions recorded, in order, when given.
	wantReasons []string
	// serial runs the case alone, before the others: it measures its answer time.
	serial bool
	// check looks further at a 200: the delivery's id and the decoded answer.
	check func(t *testing.T, b *testBundle, deliveryID int64, resp map[string]any, elapsed time.Duration)
}

// stored returns one column of the rows a query selects, as text.
func stored(t *testing.T, b *testBundle, sql string, args ...any) []string {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), sql, args...)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s *string
		require.NoError(t, rows.Scan(&s))
		if s == nil {
			out = append(out, "<null>")
		} else {
			out = append(out, *s)
		}
	}
	require.NoError(t, rows.Err())
	return out
}

func hostileCases() []hostileCase {
	one := hostileRows{Deliveries: 1, Refs: 1, Decisions: 1}
	queued := hostileRows{Deliveries: 1, Refs: 1, Decisions: 1, Runs: 1, Jobs: 1}
	base := tickets(1) // never accepted: only 4xx cases edit it
	malformed := func(sha string) hostileCase {
		return hostileCase{
			body:       hostileDelivery(`"acme/support-tickets"`, hostileRef(`"refs/heads/main"`, sha)),
			wantStatus: 200, wantRows: one, wantReasons: []string{malformedSha},
			check: func(t *testing.T, b *testBundle, id int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, []string{sha}, stored(t, b, `SELECT new_sha FROM delivery_refs WHERE delivery_id = $1`, id),
					"the delivery keeps the value as sent")
				require.Equal(t, []string{"<null>"}, stored(t, b, `SELECT new_sha FROM decisions WHERE delivery_id = $1`, id),
					"the decision carries no revision")
				d := resp["decisions"].([]any)[0].(map[string]any)
				require.Equal(t, "ignored", d["decision"])
				require.NotContains(t, d, "revision")
			},
		}
	}
	named := func(name string, c hostileCase) hostileCase { c.name = name; return c }

	return []hostileCase{
		// Bodies that are not a JSON object.
		{name: "TruncatedJSON", body: base[:len(base)/2], wantStatus: 400, wantError: []string{"invalid JSON", "unexpected end of JSON input"}},
		{name: "TopLevelArray", body: "[" + tickets(2) + "]", wantStatus: 400, wantError: []string{"the body must be a JSON object"}},
		{name: "Null", body: `null`, wantStatus: 400, wantError: []string{"the body must be a JSON object"}},
		{name: "String", body: `"repo.content.update"`, wantStatus: 400, wantError: []string{"the body must be a JSON object"}},
		{name: "Number", body: `42`, wantStatus: 400, wantError: []string{"the body must be a JSON object"}},
		{name: "True", body: `true`, wantStatus: 400, wantError: []string{"the body must be a JSON object"}},
		{name: "EmptyBody", body: ``, wantStatus: 400, wantError: []string{"invalid JSON: empty body"}},
		{name: "WhitespaceOnly", body: " \t\r\n  \n", wantStatus: 400, wantError: []string{"invalid JSON: empty body"}},
		{name: "TwoObjects", body: base + " {}", wantStatus: 400, wantError: []string{"invalid JSON", "after top-level value"}},
		{name: "ByteOrderMark", body: "\xef\xbb\xbf" + base, wantStatus: 400, wantError: []string{"invalid JSON", "(at byte 1)"}},
		{name: "FormEncoded", header: http.Header{"X-Webhook-Secret": {testSecret}, "Content-Type": {"application/x-www-form-urlencoded"}},
			body: "payload=" + base, wantStatus: 400, wantError: []string{"invalid JSON"}},
		// We do not decompress: a gzip body is bytes that are not JSON.
		{name: "GzipBody", header: http.Header{"X-Webhook-Secret": {testSecret}, "Content-Encoding": {"gzip"}},
			body: gzipped(tickets(3)), wantStatus: 400, wantError: []string{"invalid JSON"}},
		// encoding/json stops at 10,000 levels of nesting.
		{name: "DeepNesting100000", body: `{"a":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`,
			wantStatus: 400, wantError: []string{"invalid JSON", "exceeded max depth"}},

		// A field we read, with the wrong type.
		{name: "EventString", body: edit(base, `"event":{"scope":"repo.content","action":"update"}`, `"event":"repo.content.update"`),
			wantStatus: 400, wantError: []string{`field "event" must be an object, not string`}},
		{name: "ScopeNumber", body: edit(base, `"scope":"repo.content"`, `"scope":1`),
			wantStatus: 400, wantError: []string{`field "event.scope" must be a string, not number`}},
		{name: "ActionArray", body: edit(base, `"action":"update"`, `"action":["update"]`),
			wantStatus: 400, wantError: []string{`field "event.action" must be a string, not array`}},
		{name: "RepoString", body: edit(base, `"repo":{"type":"dataset","name":"acme/support-tickets",`, `"repo":"acme/support-tickets","x":{`),
			wantStatus: 400, wantError: []string{`field "repo" must be an object, not string`}},
		{name: "RepoTypeNumber", body: edit(base, `"type":"dataset"`, `"type":2`),
			wantStatus: 400, wantError: []string{`field "repo.type" must be a string, not number`}},
		{name: "RepoNameObject", body: edit(base, `"name":"acme/support-tickets"`, `"name":{"org":"acme"}`),
			wantStatus: 400, wantError: []string{`field "repo.name" must be a string, not object`}},
		{name: "RepoIDNumber", body: edit(base, `"id":"66a1f0c2b9e4d3a1f2c3d4e5"`, `"id":66`),
			wantStatus: 400, wantError: []string{`field "repo.id" must be a string, not number`}},
		{name: "HeadShaBool", body: edit(base, `"headSha":"`, `"headSha":true,"was":"`),
			wantStatus: 400, wantError: []string{`field "repo.headSha" must be a string, not bool`}},
		{name: "UpdatedRefsObject", body: edit(edit(base, `"updatedRefs":[`, `"updatedRefs":{"0":`), `}],"webhook"`, `}},"webhook"`),
			wantStatus: 400, wantError: []string{`field "updatedRefs" must be an array, not object`}},
		// encoding/json names the array, not the element: the message says what is wrong, not where in the array.
		{name: "UpdatedRefsEntryString", body: hostileDelivery(`"acme/support-tickets"`, `"refs/heads/main"`),
			wantStatus: 400, wantError: []string{`field "updatedRefs" must be an object, not string`}},
		{name: "RefNumber", body: hostileDelivery(`"acme/support-tickets"`, hostileRef(`7`, hsha(4))),
			wantStatus: 400, wantError: []string{`field "updatedRefs.ref" must be a string, not number`}},
		{name: "OldShaNumber", body: edit(base, `"oldSha":"`, `"oldSha":0,"was":"`),
			wantStatus: 400, wantError: []string{`field "updatedRefs.oldSha" must be a string, not number`}},
		{name: "NewShaNumber", body: edit(base, `"newSha":"`, `"newSha":1e40,"was":"`),
			wantStatus: 400, wantError: []string{`field "updatedRefs.newSha" must be a string, not number`}},
		{name: "WebhookString", body: edit(base, `"webhook":{"id":"6650e8d1c2b3a4f5e6d7c8b9","version":3}`, `"webhook":"6650e8d1c2b3a4f5e6d7c8b9"`),
			wantStatus: 400, wantError: []string{`field "webhook" must be an object, not string`}},
		{name: "WebhookIDNumber", body: edit(base, `"id":"6650e8d1c2b3a4f5e6d7c8b9"`, `"id":6650`),
			wantStatus: 400, wantError: []string{`field "webhook.id" must be a string, not number`}},

		// Missing fields.
		{name: "RepoNameMissing", body: edit(base, `"name":"acme/support-tickets",`, ``),
			wantStatus: 400, wantError: []string{"missing repo.name"}},
		{name: "ScopeEmpty", body: edit(base, `"scope":"repo.content"`, `"scope":""`),
			wantStatus: 400, wantError: []string{"missing event.scope"}},
		{name: "RefEntryNull", body: hostileDelivery(`"acme/support-tickets"`, hostileRef(`"refs/heads/main"`, hsha(5)), `null`),
			wantStatus: 400, wantError: []string{"updatedRefs[1].ref is missing"}},

		// Duplicate keys: the last occurrence of a key wins, and a repeated object is merged into the first one
		// rather than replacing it (encoding/json): here the first event's action survives the second event.
		{name: "DuplicateEventMerged",
			body: edit(tickets(6), `"event":{"scope":"repo.content","action":"update"}`,
				`"event":{"scope":"repo.config","action":"update"},"event":{"scope":"repo.content"}`),
			wantStatus: 200, wantRows: queued,
			check: func(t *testing.T, _ *testBundle, _ int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, "repo.content.update", resp["event"])
			}},
		{name: "DuplicateNameLastWins",
			body:       edit(tickets(7), `"name":"acme/support-tickets"`, `"name":"acme/elsewhere","name":"acme/support-tickets"`),
			wantStatus: 200, wantRows: queued,
			check: func(t *testing.T, _ *testBundle, _ int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, "acme/support-tickets", resp["repo"])
			}},
		// Keys match case-insensitively (encoding/json), so a differently cased key overrides the exact one
		// that comes before it.
		{name: "KeyCaseInsensitive",
			body:       edit(tickets(8), `"name":"acme/support-tickets"`, `"name":"acme/support-tickets","NAME":"acme/elsewhere"`),
			wantStatus: 200, wantRows: one, wantReasons: []string{"no enabled mapping for dataset acme/elsewhere"},
			check: func(t *testing.T, _ *testBundle, _ int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, "acme/elsewhere", resp["repo"])
			}},

		// Bytes PostgreSQL's text, a terminal or a command must not receive. JSON is UTF-8 (RFC 8259), and
		// encoding/json would silently replace invalid bytes with U+FFFD, so that the stored repository or ref
		// differs from the one sent: the body is refused instead.
		{name: "InvalidUTF8RepoName", body: hostileDelivery("\"acme/support-tickets\xff\"", hostileRef(`"refs/heads/main"`, hsha(9))),
			wantStatus: 400, wantError: []string{"UTF-8"}},
		{name: "InvalidUTF8Ref", body: hostileDelivery(`"acme/branches"`, hostileRef("\"refs/heads/ma\xc3\x28in\"", hsha(10))),
			wantStatus: 400, wantError: []string{"UTF-8"}},
		{name: "InvalidUTF8IgnoredField", body: edit(tickets(11), `"owner":{"id":"62b1e8c7d4a3f2e1c0b9a8d7"}`, "\"owner\":{\"id\":\"\xfe\xff\"}"),
			wantStatus: 400, wantError: []string{"UTF-8"}},
		{name: "NULInRepoName", body: hostileDelivery(`"acme/support-tickets\u0000"`, hostileRef(`"refs/heads/main"`, hsha(12))),
			wantStatus: 400, wantError: []string{"repo.name contains a NUL character"}},
		{name: "NULInRef", body: hostileDelivery(`"acme/branches"`, hostileRef(`"refs/heads/main\u0000"`, hsha(13))),
			wantStatus: 400, wantError: []string{"updatedRefs[0].ref contains a NUL character"}},
		// Control characters: the Hub never sends them in a name or a ref; they would reach the console, the
		// logs and a command's DATASET_REPO/DATASET_REF.
		{name: "NewlineInRepoName", body: hostileDelivery(`"acme/support-tickets\n"`, hostileRef(`"refs/heads/main"`, hsha(14))),
			wantStatus: 400, wantError: []string{"repo.name", "control character"}},
		{name: "EscapeInRepoName", body: hostileDelivery(`"evil/\u001b[2Jcleared"`, hostileRef(`"refs/heads/main"`, hsha(15))),
			wantStatus: 400, wantError: []string{"repo.name", "control character"}},
		{name: "CRLFInRef", body: hostileDelivery(`"acme/branches"`, hostileRef(`"refs/heads/main\r\nX-Injected: 1"`, hsha(16))),
			wantStatus: 400, wantError: []string{"updatedRefs[0].ref", "control character"}},

		// Size: the limit is inclusive. A dataset's content update is kept whole, however large.
		{name: "ExactlyTheLimit", body: padTo(tickets(17), hostileMaxBody), wantStatus: 200, wantRows: queued,
			check: func(t *testing.T, b *testBundle, id int64, _ map[string]any, _ time.Duration) {
				var n int
				require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT length(payload) FROM deliveries WHERE id = $1`, id).Scan(&n))
				require.Equal(t, hostileMaxBody, n)
			}},
		{name: "LimitPlusOne", body: padTo(tickets(18), hostileMaxBody+1), wantStatus: 413,
			wantError: []string{fmt.Sprintf("body larger than %d bytes", hostileMaxBody)}},

		// A newSha that is not a commit id is recorded, and never reaches a command.
		named("NewSha39", malformed(hsha(19)[:39])),
		named("NewSha41", malformed(hsha(20)+"0")),
		named("NewShaUpperCase", malformed(strings.ToUpper("abcdef"+hsha(21)[6:]))),
		named("NewShaWithSpace", malformed(hsha(22)[:20]+" "+hsha(22)[21:])),

		// Refs and names made of shell syntax or paths are data: matched as strings, stored verbatim.
		{name: "ShellRefNotUnderHeadsGlob", body: hostileDelivery(`"acme/branches"`, hostileRef(jq(shellRef), hsha(23))),
			wantStatus: 200, wantRows: one, wantReasons: []string{"ref " + shellRef + " is not watched (refs: refs/heads/*)"}},
		{name: "ShellRefWatchedVerbatim", body: hostileDelivery(`"acme/shell"`, hostileRef(jq(shellRef), hsha(24))),
			wantStatus: 200, wantRows: queued,
			check: func(t *testing.T, b *testBundle, id int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, []string{shellRef}, stored(t, b, `SELECT ref FROM runs WHERE delivery_id = $1`, id))
				require.Equal(t, []string{shellRef}, stored(t, b, `SELECT ref FROM delivery_refs WHERE delivery_id = $1`, id))
				require.Equal(t, []string{shellRef}, stored(t, b, `SELECT ref FROM decisions WHERE delivery_id = $1`, id))
				require.Equal(t, shellRef, resp["decisions"].([]any)[0].(map[string]any)["ref"])
			}},
		{name: "DotDotRef", body: hostileDelivery(`"acme/branches"`, hostileRef(`"refs/heads/../../etc"`, hsha(25))),
			wantStatus: 200, wantRows: one, wantReasons: []string{"ref refs/heads/../../etc is not watched (refs: refs/heads/*)"}},
		{name: "DotDotRepoName", body: hostileDelivery(`"acme/x/../support-tickets"`, hostileRef(`"refs/heads/main"`, hsha(26))),
			wantStatus: 200, wantRows: one, wantReasons: []string{"no enabled mapping for dataset acme/x/../support-tickets"}},
		{name: "CommandSubstitutionRepoName", body: hostileDelivery(`"evil/$(reboot)"`, hostileRef(`"refs/heads/main"`, hsha(27))),
			wantStatus: 200, wantRows: queued,
			check: func(t *testing.T, b *testBundle, id int64, resp map[string]any, _ time.Duration) {
				require.Equal(t, "evil/$(reboot)", resp["repo"])
				require.Equal(t, []string{"evil/$(reboot)"}, stored(t, b, `SELECT dataset FROM runs WHERE delivery_id = $1`, id))
			}},

		// 10,000 refs (about 1 MiB): one run for main, 9,999 decisions saying why not.
		{name: "TenThousandRefs", body: manyRefs(10000), wantStatus: 200, serial: true,
			wantRows: hostileRows{Deliveries: 1, Refs: 10000, Decisions: 10000, Runs: 1, Jobs: 1},
			check: func(t *testing.T, b *testBundle, id int64, resp map[string]any, elapsed time.Duration) {
				limit := 5 * time.Second
				if raceEnabled() {
					limit *= 3 // the race detector makes parsing and encoding several times slower
				}
				t.Logf("10,000 refs: %d bytes answered in %s (limit %s)", len(manyRefs(10000)), elapsed.Round(time.Millisecond), limit)
				require.Less(t, elapsed, limit)
				require.Len(t, resp["decisions"], 10000)
				require.Equal(t, []string{"9999"}, stored(t, b, `SELECT count(*)::text FROM decisions
					WHERE delivery_id = $1 AND decision = 'ignored' AND reason LIKE '% is not watched (refs: refs/heads/main)'`, id))
				require.Equal(t, []string{"refs/heads/main"}, stored(t, b, `SELECT ref FROM runs WHERE delivery_id = $1`, id))
			}},

		// The secret.
		{name: "SecretTrailingNewlineInQuery", header: http.Header{}, path: "?secret=" + testSecret + "%0A", body: tickets(28),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		// A header cannot carry a newline; trailing spaces are optional whitespace that HTTP itself strips.
		{name: "SecretTrailingSpaceInHeader", header: http.Header{"X-Webhook-Secret": {testSecret + " \t"}}, body: tickets(29),
			wantStatus: 200, wantRows: queued},
		{name: "SecretNonASCII", header: http.Header{"X-Webhook-Secret": {"sécret-ünïcode-ß"}}, body: tickets(30),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		{name: "SecretRightPlusNonASCII", header: http.Header{"X-Webhook-Secret": {testSecret + "é"}}, body: tickets(31),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		{name: "SecretInQueryWrongHeader", header: http.Header{"X-Webhook-Secret": {"wrong"}}, path: "?secret=" + testSecret, body: tickets(32),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		{name: "SecretOtherCase", header: http.Header{"X-Webhook-Secret": {strings.ToUpper(testSecret)}}, body: tickets(33),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		// Sent twice, the header's first value is the one compared (Header.Get).
		{name: "SecretTwiceRightFirst", header: http.Header{"X-Webhook-Secret": {testSecret, "wrong"}}, body: tickets(34),
			wantStatus: 200, wantRows: queued},
		{name: "SecretTwiceWrongFirst", header: http.Header{"X-Webhook-Secret": {"wrong", testSecret}}, body: tickets(35),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},
		{name: "NoSecret", header: http.Header{}, body: tickets(36),
			wantStatus: 401, wantError: []string{"missing or wrong webhook secret"}},

		// Other methods, with the right secret and a valid body.
		{name: "MethodGET", method: http.MethodGet, body: tickets(37), wantStatus: 405, wantError: []string{"method not allowed"}},
		{name: "MethodPUT", method: http.MethodPut, body: tickets(38), wantStatus: 405, wantError: []string{"method not allowed"}},
		{name: "MethodDELETE", method: http.MethodDelete, body: tickets(39), wantStatus: 405, wantError: []string{"method not allowed"}},
		{name: "MethodPATCH", method: http.MethodPatch, body: tickets(40), wantStatus: 405, wantError: []string{"method not allowed"}},
	}
}

// TestWebhookHostileCatalogue posts hostile and broken deliveries to one server, each from its own loopback
// address, and checks the answer and exactly the rows each one wrote: a 200 writes its delivery, refs, decisions,
// runs and queue jobs, a 4xx writes nothing. After the whole catalogue the server still answers.
func TestWebhookHostileCatalogue(t *testing.T) {
	t.Parallel()
	b := setupHostile(t)
	cases := hostileCases()
	require.GreaterOrEqual(t, len(cases), 40)
	require.Less(t, len(cases), 200, "one loopback address per case")

	// The rows the cases that ran (all of them, unless -run picks some) should have written.
	var mu sync.Mutex
	var want hostileRows
	t.Run("Cases", func(t *testing.T) {
		for i, tc := range cases {
			from := net.IPv4(127, 0, 0, byte(10+i))
			t.Run(tc.name, func(t *testing.T) {
				if !tc.serial {
					t.Parallel()
				}
				if tc.wantStatus == 200 {
					mu.Lock()
					want.Deliveries += tc.wantRows.Deliveries
					want.Refs += tc.wantRows.Refs
					want.Decisions += tc.wantRows.Decisions
					want.Runs += tc.wantRows.Runs
					want.Jobs += tc.wantRows.Jobs
					mu.Unlock()
				}
				runHostileCase(t, b, from, tc)
			})
		}
	})

	// The server still answers, and still takes a normal delivery.
	status, _, resp := b.request(t, http.MethodGet, "/healthz", "", nil)
	require.Equal(t, 200, status)
	require.Equal(t, "ok", resp["status"])
	status, _, resp = b.request(t, http.MethodPost, "/webhooks/huggingface", tickets(1000), map[string]string{"X-Webhook-Secret": testSecret})
	require.Equal(t, 200, status, "a normal delivery after the catalogue: %v", resp)
	require.Len(t, resp["runs"], 1)
	want.Deliveries, want.Refs, want.Decisions, want.Runs, want.Jobs = want.Deliveries+1, want.Refs+1, want.Decisions+1, want.Runs+1, want.Jobs+1

	var got hostileRows
	for _, c := range []struct {
		dst *int
		sql string
	}{
		{&got.Deliveries, `SELECT count(*) FROM deliveries`},
		{&got.Refs, `SELECT count(*) FROM delivery_refs`},
		{&got.Decisions, `SELECT count(*) FROM decisions`},
		{&got.Runs, `SELECT count(*) FROM runs`},
	} {
		*c.dst = b.count(t, c.sql)
	}
	got.Jobs = b.jobCount(t, river.NewJobListParams())
	require.Equal(t, want, got, "the catalogue wrote exactly the rows of its 200s")
}

func runHostileCase(t *testing.T, b *testBundle, from net.IP, tc hostileCase) {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 5 * time.Second}
	transport := &http.Transport{DialContext: dialer.DialContext}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}

	method := tc.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, b.server.URL+"/webhooks/huggingface"+tc.path, strings.NewReader(tc.body))
	require.NoError(t, err)
	header := tc.header
	if header == nil {
		header = http.Header{"X-Webhook-Secret": {testSecret}}
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	start := time.Now()
	res, err := client.Do(req)
	require.NoError(t, err)
	data, err := io.ReadAll(res.Body)
	elapsed := time.Since(start)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())

	require.Equal(t, tc.wantStatus, res.StatusCode, "answer: %.500s", data)
	require.Contains(t, res.Header.Get("Content-Type"), "application/json")
	var resp map[string]any
	require.NoError(t, json.Unmarshal(data, &resp), "the answer is a JSON object: %.500s", data)

	rows := rowsFrom(t, b, from.String())
	if tc.wantStatus != 200 {
		require.Len(t, resp, 1, "an error answer is {\"error\": ...}: %s", data)
		msg, ok := resp["error"].(string)
		require.True(t, ok, "answer: %s", data)
		for _, part := range tc.wantError {
			require.Contains(t, msg, part)
		}
		if tc.wantStatus == http.StatusMethodNotAllowed {
			require.Equal(t, http.MethodPost, res.Header.Get("Allow"), "a 405 names the allowed methods (RFC 9110, 15.5.6)")
		}
		require.Equal(t, hostileRows{}, rows, "a refused request writes nothing")
		return
	}

	require.Equal(t, tc.wantRows, rows)
	require.Equal(t, true, resp["received"])
	require.Len(t, resp["runs"], tc.wantRows.Runs)
	require.Len(t, resp["decisions"], tc.wantRows.Decisions)
	id := int64(resp["delivery_id"].(float64))
	require.Equal(t, []string{from.String()}, stored(t, b, `SELECT remote_addr FROM deliveries WHERE id = $1`, id))
	var payload []byte
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT payload FROM deliveries WHERE id = $1`, id).Scan(&payload))
	require.True(t, bytes.Equal([]byte(tc.body), payload), "the raw body is stored as received")
	if tc.wantReasons != nil {
		require.Equal(t, tc.wantReasons, stored(t, b, `SELECT reason FROM decisions WHERE delivery_id = $1 ORDER BY id`, id))
	}
	if tc.check != nil {
		tc.check(t, b, id, resp, elapsed)
	}
}

// rowsFrom counts the rows written for the deliveries received from addr.
func rowsFrom(t *testing.T, b *testBundle, addr string) hostileRows {
	t.Helper()
	var r hostileRows
	var jobIDs []int64
	require.NoError(t, b.pool.QueryRow(context.Background(), `
		WITH d AS (SELECT id FROM deliveries WHERE remote_addr = $1)
		SELECT (SELECT count(*) FROM d),
			(SELECT count(*) FROM delivery_refs WHERE delivery_id IN (SELECT id FROM d)),
			(SELECT count(*) FROM decisions WHERE delivery_id IN (SELECT id FROM d)),
			(SELECT count(*) FROM runs WHERE delivery_id IN (SELECT id FROM d)),
			(SELECT array_remove(array_agg(job_id), NULL) FROM runs WHERE delivery_id IN (SELECT id FROM d))`,
		addr).Scan(&r.Deliveries, &r.Refs, &r.Decisions, &r.Runs, &jobIDs))
	if len(jobIDs) > 0 {
		r.Jobs = b.jobCount(t, river.NewJobListParams().IDs(jobIDs...))
	}
	return r
}
