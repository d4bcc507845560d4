package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// postPage posts a browser form without following redirects and returns the answer parsed.
func (b *testBundle) postPage(t *testing.T, path string, values url.Values, header map[string]string) *page {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.server.URL+path, strings.NewReader(values.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	root, err := html.Parse(strings.NewReader(string(data)))
	require.NoError(t, err)
	return &page{status: resp.StatusCode, header: resp.Header, root: root, raw: string(data)}
}

func hasAttr(n *html.Node, key string) bool {
	for _, a := range n.Attr {
		if a.Key == key {
			return true
		}
	}
	return false
}

// mappingFormValues returns what a browser submits for the page's mapping form as it stands.
func mappingFormValues(t *testing.T, p *page) url.Values {
	t.Helper()
	return fieldValues(t, p.one(t, byAttr("class", "mapping-form")))
}

// fieldValues returns what a browser submits for the form fields below n.
func fieldValues(t *testing.T, n *html.Node) url.Values {
	t.Helper()
	v := url.Values{}
	fields := find(n, func(n *html.Node) bool { return n.Data == "input" || n.Data == "select" || n.Data == "textarea" })
	for _, n := range fields {
		name := attr(n, "name")
		switch {
		case name == "":
		case n.Data == "textarea":
			v.Add(name, text(n))
		case n.Data == "select":
			options := find(n, byTag("option"))
			require.NotEmpty(t, options, name)
			chosen := options[0]
			for _, o := range options {
				if hasAttr(o, "selected") {
					chosen = o
				}
			}
			v.Add(name, attr(chosen, "value"))
		case attr(n, "type") == "checkbox":
			if hasAttr(n, "checked") {
				v.Add(name, attr(n, "value"))
			}
		default:
			v.Add(name, attr(n, "value"))
		}
	}
	return v
}

// formRows returns the notify rows of a mapping form: each row's field values by field name without the
// row's index.
func formRows(t *testing.T, p *page) []url.Values {
	t.Helper()
	var rows []url.Values
	for i, row := range find(p.root, func(n *html.Node) bool { return attr(n, "data-notify-row") != "" }) {
		require.Equal(t, fmt.Sprint(i+1), attr(row, "data-notify-row"))
		v := url.Values{}
		for key, values := range fieldValues(t, row) {
			v[strings.TrimSuffix(key, fmt.Sprintf("_%d", i))] = values
		}
		rows = append(rows, v)
	}
	return rows
}

func TestMappingFormNotify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupWithOpts(t, setupOpts{adminToken: adminToken})
	auth := map[string]string{"Authorization": "Basic " + basicAuth("me", adminToken)}
	const (
		ops    = "https://ops.example.com/hooks/orchestrator?key=abc"
		slack2 = "https://hooks.slack.com/services/T0AAA/B0CCC/otherpath"
		newURL = "https://hooks.slack.com/services/T0AAA/B0DDD/newpath"
	)
	on := func(events ...orchestrator.NotifyEvent) []orchestrator.NotifyEvent { return events }
	slackTarget := orchestrator.NotifyTarget{URL: slackHook, Format: "slack", On: on("failed", "recovered")}
	opsTarget := orchestrator.NotifyTarget{URL: ops, Format: "json", On: on("failed"), SecretEnv: "NOTIFY_SECRET_OPS"}
	twoTargets := []orchestrator.NotifyTarget{slackTarget, opsTarget}

	cases := []struct {
		name     string
		existing []orchestrator.NotifyTarget
		edit     func(v url.Values)
		want     []orchestrator.NotifyTarget // the targets afterwards
		wantErr  string                      // the message the form comes back with
		kept     map[string]string           // fields the form comes back with, as typed
	}{
		{name: "Unchanged", existing: twoTargets, edit: func(url.Values) {}, want: twoTargets},
		{name: "SameHostRowsKeepTheirOwn",
			existing: []orchestrator.NotifyTarget{slackTarget, {URL: slack2, Format: "slack", On: on("succeeded")}},
			edit:     func(url.Values) {},
			want:     []orchestrator.NotifyTarget{slackTarget, {URL: slack2, Format: "slack", On: on("succeeded")}}},
		{name: "ChangeFormatEventsSecret", existing: twoTargets, edit: func(v url.Values) {
			v.Set("notify_format_0", "json")
			v["notify_on_0"] = []string{"failed", "succeeded"}
			v.Set("notify_secret_env_0", "SLACK_SIGNING")
		}, want: []orchestrator.NotifyTarget{{URL: slackHook, Format: "json", On: on("failed", "succeeded"), SecretEnv: "SLACK_SIGNING"}, opsTarget}},
		{name: "ReplaceURL", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_url_1", "https://ops.example.com/v2/hook") },
			want: []orchestrator.NotifyTarget{slackTarget, {URL: "https://ops.example.com/v2/hook", Format: "json", On: on("failed"), SecretEnv: "NOTIFY_SECRET_OPS"}}},
		{name: "Remove", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_remove_0", "1") }, want: []orchestrator.NotifyTarget{opsTarget}},
		{name: "RemoveAll", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_remove_0", "1"); v.Set("notify_remove_1", "1") },
			want: []orchestrator.NotifyTarget{}},
		{name: "Add", existing: twoTargets, edit: func(v url.Values) {
			v.Set("notify_url_2", newURL)
			v.Set("notify_format_2", "slack")
			v["notify_on_2"] = []string{"succeeded"}
		}, want: []orchestrator.NotifyTarget{slackTarget, opsTarget, {URL: newURL, Format: "slack", On: on("succeeded")}}},
		{name: "AddToNone", existing: nil, edit: func(v url.Values) { v.Set("notify_url_1", ops) },
			want: []orchestrator.NotifyTarget{{URL: ops, Format: "json", On: on("failed", "recovered")}}},
		{name: "AddAsShownKeepsURL", existing: twoTargets, edit: func(v url.Values) {
			v.Set("notify_remove_1", "1")
			v.Set("notify_url_2", "https://ops.example.com/…")
		}, want: []orchestrator.NotifyTarget{slackTarget, {URL: ops, Format: "json", On: on("failed", "recovered")}}},
		{name: "ShortenedUnknown", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_url_2", "https://hooks.example.com/…") },
			wantErr: `notify target 3: url "https://hooks.example.com/…" is a shortened URL, as shown for a target, and no target of the mapping has it: send the full URL`,
			kept:    map[string]string{"notify_url_2": "https://hooks.example.com/…", "notify_url_0": "https://hooks.slack.com/…"}},
		{name: "ShortenedAmbiguous", existing: []orchestrator.NotifyTarget{slackTarget, {URL: slack2, Format: "slack", On: on("failed")}},
			edit:    func(v url.Values) { v.Set("notify_url_2", "https://hooks.slack.com/…") },
			wantErr: "notify target 3: url \"https://hooks.slack.com/…\" is the shortened form of 2 different target URLs of the mapping: send the full URL"},
		{name: "InvalidAfterRemovedRow", existing: twoTargets, edit: func(v url.Values) {
			v.Set("notify_remove_0", "1")
			v.Set("notify_url_3", "ftp://files.example.com/drop")
			v.Set("dataset", "acme/typed")
		}, wantErr: `notify target 4: url scheme "ftp" must be http or https`,
			kept: map[string]string{"notify_url_3": "ftp://files.example.com/drop", "notify_remove_0": "1", "dataset": "acme/typed"}},
		{name: "BadSecretEnv", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_secret_env_1", "my-secret") },
			wantErr: `notify target 2: secret_env "my-secret" must be the name of an environment variable`,
			kept:    map[string]string{"notify_secret_env_1": "my-secret"}},
		{name: "NoEvents", existing: twoTargets, edit: func(v url.Values) { delete(v, "notify_on_0") },
			wantErr: "notify target 1: tick at least one event"},
		{name: "EmptiedURL", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_url_0", " ") },
			wantErr: "notify target 1: url must not be empty"},
		{name: "SecretEnvWithoutURL", existing: twoTargets, edit: func(v url.Values) { v.Set("notify_secret_env_2", "X") },
			wantErr: "notify target 3: url must not be empty", kept: map[string]string{"notify_secret_env_2": "X"}},
		{name: "TooMany", existing: fullTargets(slackTarget), edit: func(v url.Values) {
			v.Set("notify_url_10", newURL) // a row more than the page offers
			v.Set("notify_format_10", "json")
			v.Set("notify_on_10", "failed")
		}, wantErr: "notify has 11 targets; at most 10 are allowed", kept: map[string]string{"notify_url_10": newURL}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("form-%d", i)
			m := orchestrator.Mapping{Name: name, Dataset: "acme/faces", Command: []string{"true"}, Notify: tc.existing, Source: orchestrator.SourceAPI}
			_, err := b.store.MappingCreate(ctx, m.WithDefaults())
			require.NoError(t, err)
			before, err := b.store.MappingGetByName(ctx, name)
			require.NoError(t, err)

			p := b.getPage(t, "/mappings/"+name, auth)
			require.Equal(t, http.StatusOK, p.status)
			require.NotContains(t, p.raw, "xoxsecretpath")
			require.NotContains(t, p.raw, "key=abc")
			rows := formRows(t, p)
			require.Len(t, rows, len(tc.existing)+min(2, orchestrator.NotifyTargetsMax-len(tc.existing)), "a row per target and empty rows")
			for j, target := range tc.existing {
				require.Equal(t, orchestrator.RedactURL(target.URL), rows[j].Get("notify_url"), "shown shortened")
			}

			values := mappingFormValues(t, p)
			tc.edit(values)
			answer := b.postPage(t, "/mappings/"+name, values, auth)
			after, err := b.store.MappingGetByName(ctx, name)
			require.NoError(t, err)
			if tc.wantErr != "" {
				require.Equal(t, http.StatusBadRequest, answer.status, answer.raw)
				require.Contains(t, text(answer.one(t, byID("form-error"))), tc.wantErr)
				require.Equal(t, before.Notify, after.Notify, "a refused form changes nothing")
				require.NotContains(t, answer.raw, "xoxsecretpath")
				require.NotContains(t, answer.raw, "key=abc")
				again := mappingFormValues(t, answer)
				for field, want := range tc.kept {
					require.Equal(t, want, again.Get(field), field)
				}
				require.Equal(t, values.Get("notify_url_0"), again.Get("notify_url_0"))
				return
			}
			require.Equal(t, http.StatusSeeOther, answer.status, answer.raw)
			require.Equal(t, tc.want, after.Notify)
		})
	}

	t.Run("NewMapping", func(t *testing.T) {
		t.Parallel()
		p := b.getPage(t, "/mappings/new", auth)
		require.Len(t, formRows(t, p), 2, "two empty rows")
		values := mappingFormValues(t, p)
		values.Set("name", "form-new")
		values.Set("dataset", "acme/new")
		values.Set("command", "true")
		values.Set("notify_url_1", "https://hooks.slack.com/…")
		answer := b.postPage(t, "/mappings", values, auth)
		require.Equal(t, http.StatusBadRequest, answer.status)
		require.Contains(t, text(answer.one(t, byID("form-error"))), "notify target 2: url \"https://hooks.slack.com/…\" is a shortened URL")
		again := mappingFormValues(t, answer)
		require.Equal(t, "form-new", again.Get("name"))
		require.Equal(t, "https://hooks.slack.com/…", again.Get("notify_url_1"))

		again.Set("notify_url_1", slackHook)
		again.Set("notify_format_1", "slack")
		answer = b.postPage(t, "/mappings", again, auth)
		require.Equal(t, http.StatusSeeOther, answer.status, answer.raw)
		m, err := b.store.MappingGetByName(ctx, "form-new")
		require.NoError(t, err)
		require.Equal(t, []orchestrator.NotifyTarget{{URL: slackHook, Format: "slack", On: on("failed", "recovered")}}, m.Notify)
		shown := b.getPage(t, "/mappings/form-new", auth)
		require.NotContains(t, shown.raw, "xoxsecretpath")
		require.Equal(t, "https://hooks.slack.com/…", formRows(t, shown)[0].Get("notify_url"))
	})
}

// fullTargets returns the most targets a mapping may have, each with its own URL.
func fullTargets(t orchestrator.NotifyTarget) []orchestrator.NotifyTarget {
	out := make([]orchestrator.NotifyTarget, orchestrator.NotifyTargetsMax)
	for i := range out {
		out[i] = t
		out[i].URL = fmt.Sprintf("%s%d", t.URL, i)
	}
	return out
}
