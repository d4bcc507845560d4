package orchestrator

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseConfigNotify(t *testing.T) {
	t.Parallel()
	const head = "mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    notify:\n"

	t.Run("TargetsWithDefaults", func(t *testing.T) {
		t.Parallel()
		mappings, err := ParseConfig([]byte(head+`
      - url: https://hooks.example.com/orchestrator
        secret_env: NOTIFY_SECRET_OPS
      - url: https://hooks.slack.com/services/T0/B0/xyz
        format: slack
        on: [failed, succeeded, recovered]
`), "/")
		require.NoError(t, err)
		require.Equal(t, []NotifyTarget{
			{URL: "https://hooks.example.com/orchestrator", Format: NotifyFormatJSON, On: []NotifyEvent{NotifyFailed, NotifyRecovered}, SecretEnv: "NOTIFY_SECRET_OPS"},
			{URL: "https://hooks.slack.com/services/T0/B0/xyz", Format: NotifyFormatSlack, On: []NotifyEvent{NotifyFailed, NotifySucceeded, NotifyRecovered}},
		}, mappings[0].Notify)
	})

	errorCases := []struct {
		name, targets, wantErr string
	}{
		{"NoURL", "      - format: json\n", "notify[0]: url must not be empty"},
		{"RelativeURL", "      - url: /hooks/x\n", "must be an absolute http or https URL"},
		{"OtherScheme", "      - url: ftp://example.com/x\n", `url scheme "ftp" must be http or https`},
		{"NoHost", "      - url: \"https://\"\n", "must be an absolute http or https URL"},
		{"BadURL", "      - url: \"http://[::1\"\n", "url is not a valid URL"},
		{"BadFormat", "      - url: https://example.com\n        format: xml\n", `format "xml" must be json or slack`},
		{"BadEvent", "      - url: https://example.com\n        on: [failed, cancelled]\n", `event "cancelled" in on must be failed, succeeded or recovered`},
		{"DuplicateEvent", "      - url: https://example.com\n        on: [failed, failed]\n", `event "failed" is listed twice`},
		{"BadSecretEnv", "      - url: https://example.com\n        secret_env: \"1SECRET\"\n", `secret_env "1SECRET" must be the name of an environment variable`},
		{"SecretInline", "      - url: https://example.com\n        secret: hunter2\n", "line 7: field secret not found"},
		{"UnknownKey", "      - url: https://example.com\n        events: [failed]\n", "line 7: field events not found"},
		{"SecondTargetBad", "      - url: https://example.com\n      - url: mailto:ops@example.com\n", `notify[1]: url scheme "mailto"`},
		{"ShortenedURL", "      - url: https://hooks.slack.com/…\n", "notify[0]: url contains '…', as the shortened form shown for a target does: give the full URL"},
		{"TooMany", strings.Repeat("      - url: https://example.com\n", NotifyTargetsMax+1), "at most 10 are allowed"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(head+tc.targets), "/")
			require.Error(t, err)
			require.Equal(t, CodeInvalid, ErrorCode(err))
			require.Contains(t, ErrorMessage(err), tc.wantErr)
			if !strings.Contains(tc.wantErr, "not found") { // a decoding error names the line instead
				require.Contains(t, ErrorMessage(err), `mapping "a" (line 2)`)
			}
		})
	}

	t.Run("QueueNotifyIsReserved", func(t *testing.T) {
		t.Parallel()
		_, err := ParseConfig([]byte("mappings:\n  - name: a\n    dataset: x/y\n    command: [true]\n    queue: notify\n"), "/")
		require.ErrorContains(t, err, `queue "notify" is reserved`)
	})
}

func TestNotifyTargetEventFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		on        []NotifyEvent
		status    RunStatus
		recovered bool
		want      NotifyEvent // "" for none
	}{
		{"DefaultFailed", nil, RunFailed, false, NotifyFailed},
		{"DefaultFailedAfterFailure", nil, RunFailed, true, NotifyFailed},
		{"DefaultPlainSuccess", nil, RunSucceeded, false, ""},
		{"DefaultRecovery", nil, RunSucceeded, true, NotifyRecovered},
		{"SucceededOnly", []NotifyEvent{NotifySucceeded}, RunSucceeded, false, NotifySucceeded},
		{"SucceededOnlyHearsRecoveryAsSuccess", []NotifyEvent{NotifySucceeded}, RunSucceeded, true, NotifySucceeded},
		{"BothGetsOneRecovered", []NotifyEvent{NotifySucceeded, NotifyRecovered}, RunSucceeded, true, NotifyRecovered},
		{"BothPlainSuccess", []NotifyEvent{NotifySucceeded, NotifyRecovered}, RunSucceeded, false, NotifySucceeded},
		{"RecoveredOnlyIgnoresFailure", []NotifyEvent{NotifyRecovered}, RunFailed, false, ""},
		{"FailedOnlyIgnoresRecovery", []NotifyEvent{NotifyFailed}, RunSucceeded, true, ""},
		{"CancelledNeverNotifies", []NotifyEvent{NotifyFailed, NotifySucceeded, NotifyRecovered}, RunCancelled, false, ""},
		{"SupersededNeverNotifies", []NotifyEvent{NotifyFailed, NotifySucceeded, NotifyRecovered}, RunSuperseded, true, ""},
		{"RetryingIsNotFinal", []NotifyEvent{NotifyFailed}, RunRetrying, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := NotifyTarget{URL: "https://example.com", On: tc.on}.withDefaults()
			event, ok := target.EventFor(tc.status, tc.recovered)
			require.Equal(t, tc.want != "", ok)
			if ok {
				require.Equal(t, tc.want, event)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"https://hooks.slack.com/services/T0/B0/secret": "https://hooks.slack.com/…",
		"https://example.com":                           "https://example.com",
		"https://example.com/":                          "https://example.com",
		"http://example.com:8080/?token=x":              "http://example.com:8080/…",
		"https://user:pass@example.com/hook":            "https://example.com/…",
		"not a url":                                     "…",
		"http://[::1":                                   "…",
	}
	for in, want := range cases {
		require.Equal(t, want, RedactURL(in), in)
	}
}

func TestMissingNotifySecrets(t *testing.T) {
	t.Parallel()
	mappings := []Mapping{{Name: "a", Notify: []NotifyTarget{
		{URL: "https://example.com/a", SecretEnv: "SET"},
		{URL: "https://example.com/b", SecretEnv: "UNSET"},
		{URL: "https://example.com/c"},
	}}}
	env := map[string]string{"SET": "x"}
	warnings := MissingNotifySecrets(mappings, func(k string) string { return env[k] })
	require.Len(t, warnings, 1)
	require.Contains(t, warnings[0], `mapping "a": notify[1] (https://example.com/…) names secret_env UNSET, which is not set`)
}

func TestResolveNotifyURL(t *testing.T) {
	t.Parallel()
	const (
		slackA = "https://hooks.slack.com/services/T0/B0/aaa"
		slackB = "https://hooks.slack.com/services/T0/B1/bbb"
		ops    = "https://ops.example.com/hooks/orchestrator?key=abc"
	)
	existing := []NotifyTarget{{URL: slackA}, {URL: ops}, {URL: "https://bare.example.com"}, {URL: "https://user:pw@creds.example.com"}}
	cases := []struct {
		name, raw string
		existing  []NotifyTarget
		want      string
		wantErr   string
	}{
		{"ShortenedKeepsFullURL", "https://hooks.slack.com/…", existing, slackA, ""},
		{"ShortenedWithQuery", "https://ops.example.com/…", existing, ops, ""},
		{"Trimmed", "  https://ops.example.com/…\n", existing, ops, ""},
		{"FullURLAsSent", "https://hooks.slack.com/services/T9/B9/new", existing, "https://hooks.slack.com/services/T9/B9/new", ""},
		{"SameFullURL", slackA, existing, slackA, ""},
		{"NoPathShownAsIs", "https://bare.example.com", existing, "https://bare.example.com", ""},
		{"CredentialsKept", "https://creds.example.com", existing, "https://user:pw@creds.example.com", ""},
		{"SameURLTwiceIsNotAmbiguous", "https://hooks.slack.com/…", []NotifyTarget{{URL: slackA}, {URL: slackA}}, slackA, ""},
		{"OtherScheme", "http://hooks.slack.com/…", existing, "", `url "http://hooks.slack.com/…" is a shortened URL`},
		{"OtherHost", "https://hooks.example.com/…", existing, "", "no target of the mapping has it: send the full URL"},
		{"NoTargets", "https://hooks.slack.com/…", nil, "", "no target of the mapping has it"},
		{"EllipsisInsideURL", "https://hooks.slack.com/services/…/bbb", existing, "", `url "https://hooks.slack.com/…" is a shortened URL`},
		{"Ambiguous", "https://hooks.slack.com/…", []NotifyTarget{{URL: slackA}, {URL: slackB}}, "",
			`url "https://hooks.slack.com/…" is the shortened form of 2 different target URLs of the mapping: send the full URL`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ResolveNotifyURL(tc.raw, tc.existing)
			if tc.wantErr != "" {
				require.Error(t, err)
				require.Equal(t, CodeInvalid, ErrorCode(err))
				require.Contains(t, ErrorMessage(err), tc.wantErr)
				require.NotContains(t, ErrorMessage(err), "bbb", "the error does not repeat a secret path")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		in := []NotifyTarget{{URL: "https://ops.example.com/…", Format: NotifyFormatJSON}, {URL: "https://hooks.slack.com/…", Format: NotifyFormatSlack}}
		got, err := ResolveNotifyURLs(in, existing)
		require.NoError(t, err)
		require.Equal(t, []NotifyTarget{{URL: ops, Format: NotifyFormatJSON}, {URL: slackA, Format: NotifyFormatSlack}}, got)
		require.Equal(t, "https://ops.example.com/…", in[0].URL, "the input is not changed")
		_, err = ResolveNotifyURLs(append(in, NotifyTarget{URL: "https://x.example.com/…"}), existing)
		require.ErrorContains(t, err, `notify[2]: url "https://x.example.com/…" is a shortened URL`)
		got, err = ResolveNotifyURLs(nil, existing)
		require.NoError(t, err)
		require.Nil(t, got)
	})
}

// TestNotifyTargetError: a fault in one of a mapping's notify targets is an *Error with CodeInvalid whose
// message names the target's index, and a *NotifyTargetError that carries the index and the fault.
func TestNotifyTargetError(t *testing.T) {
	t.Parallel()
	good := NotifyTarget{URL: "https://hooks.example.com/orchestrator"}
	mapping := func(targets ...NotifyTarget) error {
		m := Mapping{Name: "a", Dataset: "x/y", Command: []string{"true"}, Notify: targets}.WithDefaults()
		return m.Validate()
	}
	cases := []struct {
		name   string
		err    error
		index  int
		reason string
	}{
		{"FirstTargetNoURL", mapping(NotifyTarget{}), 0, "url must not be empty"},
		{"SecondTargetFormat", mapping(good, NotifyTarget{URL: good.URL, Format: "teams"}), 1, `format "teams" must be json or slack`},
		{"ThirdTargetEvent", mapping(good, good, NotifyTarget{URL: good.URL, On: []NotifyEvent{"finished"}}), 2,
			`event "finished" in on must be failed, succeeded or recovered`},
		{"ResolveShortened", func() error {
			_, err := ResolveNotifyURLs([]NotifyTarget{good, {URL: "https://hooks.example.com/…"}}, nil)
			return err
		}(), 1, `url "https://hooks.example.com/…" is a shortened URL, as shown for a target, and no target of the mapping has it: send the full URL`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Error(t, tc.err)
			require.Equal(t, CodeInvalid, ErrorCode(tc.err))
			want := fmt.Sprintf("notify[%d]: %s", tc.index, tc.reason)
			require.Equal(t, want, ErrorMessage(tc.err))
			require.Equal(t, want, tc.err.Error())
			targetErr, ok := errors.AsType[*NotifyTargetError](tc.err)
			require.True(t, ok, "%v (%T) holds no *NotifyTargetError", tc.err, tc.err)
			require.Equal(t, tc.index, targetErr.Index)
			require.Equal(t, tc.reason, targetErr.Err.Error())
		})
	}

	t.Run("OtherFaultsHaveNone", func(t *testing.T) {
		t.Parallel()
		m := Mapping{Name: "a b", Dataset: "x/y", Command: []string{"true"}}.WithDefaults()
		err := m.Validate()
		require.Error(t, err)
		_, ok := errors.AsType[*NotifyTargetError](err)
		require.False(t, ok)
	})
}
