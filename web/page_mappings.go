package web

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/retrainhq/orchestrator/orchestrator"
	"github.com/retrainhq/orchestrator/web/api"
)

// mappingForm is the mapping form's fields as typed.
type mappingForm struct {
	Name, Dataset, Refs, Command, Workdir, Env, Timeout, MaxAttempts string
	QuietPeriod, MaxWait, Concurrency, OnNewRevision                 string
	Paths, IgnorePaths                                               string // one pattern per line
	RunOnBaseline, VerifyRevision                                    bool
	// Notify has a row per notify target of the mapping, then empty rows to add targets with.
	Notify []notifyRow
}

// notifyRow is one notify target of the mapping form as typed. The rows of the mapping's targets come first,
// in their order, each showing its URL shortened: a row whose URL is left as shown keeps the target's URL.
type notifyRow struct {
	Num                    int // the row's number on the page, from 1
	Existing               bool
	URL, Format, SecretEnv string
	On                     []string
	Remove                 bool
}

// Wants reports whether the row's event box is ticked.
func (r notifyRow) Wants(event orchestrator.NotifyEvent) bool {
	return slices.Contains(r.On, string(event))
}

// notifyEmptyRows is how many empty rows the form offers for new targets.
const notifyEmptyRows = 2

// notifyRows returns the form's rows for targets, then the empty rows, as many as the limit of targets leaves.
func notifyRows(targets []orchestrator.NotifyTarget) []notifyRow {
	rows := make([]notifyRow, 0, len(targets)+notifyEmptyRows)
	for _, t := range targets {
		row := notifyRow{Existing: true, URL: orchestrator.RedactURL(t.URL), Format: string(t.Format), SecretEnv: t.SecretEnv}
		for _, e := range t.On {
			row.On = append(row.On, string(e))
		}
		rows = append(rows, row)
	}
	for range min(notifyEmptyRows, max(0, orchestrator.NotifyTargetsMax-len(targets))) {
		row := notifyRow{Format: string(orchestrator.NotifyFormatJSON)}
		for _, e := range orchestrator.NotifyOnDefault {
			row.On = append(row.On, string(e))
		}
		rows = append(rows, row)
	}
	for i := range rows {
		rows[i].Num = i + 1
	}
	return rows
}

// readNotifyRows reads the notify rows of a posted form, nil when it has none. Rows are numbered from 0 in the
// field names; the first len(existing) are the mapping's targets.
func readNotifyRows(r *http.Request, existing []orchestrator.NotifyTarget) []notifyRow {
	var rows []notifyRow
	for i := range orchestrator.NotifyTargetsMax + notifyEmptyRows {
		n := strconv.Itoa(i)
		if _, ok := r.PostForm["notify_url_"+n]; !ok {
			break
		}
		rows = append(rows, notifyRow{
			Num: i + 1, Existing: i < len(existing),
			URL: r.PostForm.Get("notify_url_" + n), Format: r.PostForm.Get("notify_format_" + n),
			SecretEnv: r.PostForm.Get("notify_secret_env_" + n), On: r.PostForm["notify_on_"+n],
			Remove: r.PostForm.Get("notify_remove_"+n) != "",
		})
	}
	return rows
}

// notifyTargets returns the targets the rows ask for, given the mapping's targets now, and for each target the
// number of the row it comes from. A row of an existing target whose URL is still the shortened form it was
// shown with keeps that target's URL; any other URL is resolved as the API does, so a shortened URL that
// stands for no target, or for several, is refused. Removed rows and empty new rows give no target.
func (f mappingForm) notifyTargets(existing []orchestrator.NotifyTarget) ([]orchestrator.NotifyTarget, []int, error) {
	targets := []orchestrator.NotifyTarget{}
	var rowNums []int
	for i, row := range f.Notify {
		u, secretEnv := strings.TrimSpace(row.URL), strings.TrimSpace(row.SecretEnv)
		if row.Remove || (i >= len(existing) && u == "" && secretEnv == "") {
			continue
		}
		if len(row.On) == 0 {
			return nil, nil, orchestrator.Errorf(orchestrator.CodeInvalid, "notify target %d: tick at least one event", row.Num)
		}
		if i < len(existing) && u == orchestrator.RedactURL(existing[i].URL) {
			u = existing[i].URL
		} else if resolved, err := orchestrator.ResolveNotifyURL(u, existing); err != nil {
			return nil, nil, orchestrator.Errorf(orchestrator.CodeInvalid, "notify target %d: %s", row.Num, orchestrator.ErrorMessage(err))
		} else {
			u = resolved
		}
		t := orchestrator.NotifyTarget{URL: u, Format: orchestrator.NotifyFormat(strings.TrimSpace(row.Format)), SecretEnv: secretEnv}
		for _, e := range row.On {
			t.On = append(t.On, orchestrator.NotifyEvent(e))
		}
		targets = append(targets, t)
		rowNums = append(rowNums, row.Num)
	}
	return targets, rowNums, nil
}

// notifyRowError names the row instead of the target's index in a validation error about a notify target:
// rowNums[i] is the row of target i.
func notifyRowError(err error, rowNums []int) error {
	targetErr, ok := errors.AsType[*orchestrator.NotifyTargetError](err)
	if !ok || orchestrator.ErrorCode(err) != orchestrator.CodeInvalid || targetErr.Index < 0 || targetErr.Index >= len(rowNums) {
		return err
	}
	return orchestrator.Errorf(orchestrator.CodeInvalid, "notify target %d: %s", rowNums[targetErr.Index], targetErr.Err)
}

func formFromMapping(m *orchestrator.Mapping) mappingForm {
	f := mappingForm{
		Name: m.Name, Dataset: m.Dataset, Refs: strings.Join(m.Refs, "\n"), Command: strings.Join(m.Command, "\n"),
		Workdir: m.Workdir, Env: envLines(m.Env), Timeout: m.Timeout.String(), MaxAttempts: strconv.Itoa(m.MaxAttempts),
		Concurrency: strconv.Itoa(m.Concurrency), OnNewRevision: string(m.OnNewRevision),
		RunOnBaseline: m.RunOnBaseline, VerifyRevision: m.VerifyRevision, Notify: notifyRows(m.Notify),
		Paths: strings.Join(m.Paths, "\n"), IgnorePaths: strings.Join(m.IgnorePaths, "\n"),
	}
	if m.QuietPeriod > 0 {
		f.QuietPeriod, f.MaxWait = m.QuietPeriod.String(), m.MaxWait.String()
	}
	return f
}

// input parses the form: refs, command, paths and ignore_paths one per line, env as KEY=VALUE lines.
func (f mappingForm) input() (orchestrator.MappingSpec, error) {
	in := orchestrator.MappingSpec{Name: f.Name, Dataset: f.Dataset, Workdir: f.Workdir, Timeout: orchestrator.Duration(f.Timeout),
		QuietPeriod: orchestrator.Duration(f.QuietPeriod), MaxWait: orchestrator.Duration(f.MaxWait), OnNewRevision: orchestrator.NewRevisionPolicy(f.OnNewRevision),
		RunOnBaseline: f.RunOnBaseline, VerifyRevision: f.VerifyRevision, Paths: splitLines(f.Paths), IgnorePaths: splitLines(f.IgnorePaths)}
	if c := strings.TrimSpace(f.Concurrency); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil {
			return in, orchestrator.Errorf(orchestrator.CodeInvalid, "concurrency %q must be a whole number", c)
		}
		in.Concurrency = n
	}
	for _, line := range splitLines(f.Refs) {
		for _, ref := range strings.Split(line, ",") {
			if ref = strings.TrimSpace(ref); ref != "" {
				in.Refs = append(in.Refs, ref)
			}
		}
	}
	// Arguments keep their inner spaces; only the line breaks separate them.
	for _, line := range strings.Split(strings.ReplaceAll(f.Command, "\r\n", "\n"), "\n") {
		if strings.TrimSpace(line) != "" {
			in.Command = append(in.Command, line)
		}
	}
	for _, line := range splitLines(f.Env) {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return in, orchestrator.Errorf(orchestrator.CodeInvalid, "env line %q must be KEY=VALUE", line)
		}
		if in.Env == nil {
			in.Env = map[string]string{}
		}
		in.Env[strings.TrimSpace(k)] = v
	}
	if a := strings.TrimSpace(f.MaxAttempts); a != "" {
		n, err := strconv.Atoi(a)
		if err != nil {
			return in, orchestrator.Errorf(orchestrator.CodeInvalid, "max attempts %q must be a whole number", a)
		}
		in.MaxAttempts = n
	}
	return in, nil
}

func splitLines(s string) []string {
	var out []string
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// readMappingForm reads the posted form of a mapping whose notify targets are existing (none for a new one). A
// form without notify rows keeps the targets as they are.
func readMappingForm(r *http.Request, existing []orchestrator.NotifyTarget) mappingForm {
	f := mappingForm{
		Name: r.PostFormValue("name"), Dataset: r.PostFormValue("dataset"), Refs: r.PostFormValue("refs"),
		Command: r.PostFormValue("command"), Workdir: r.PostFormValue("workdir"), Env: r.PostFormValue("env"),
		Timeout: r.PostFormValue("timeout"), MaxAttempts: r.PostFormValue("max_attempts"),
		QuietPeriod: r.PostFormValue("quiet_period"), MaxWait: r.PostFormValue("max_wait"),
		Concurrency: r.PostFormValue("concurrency"), OnNewRevision: r.PostFormValue("on_new_revision"),
		RunOnBaseline: r.PostFormValue("run_on_baseline") != "", VerifyRevision: r.PostFormValue("verify_revision") != "",
		Paths: r.PostFormValue("paths"), IgnorePaths: r.PostFormValue("ignore_paths"),
	}
	if f.Notify = readNotifyRows(r, existing); f.Notify == nil {
		f.Notify = notifyRows(existing)
	}
	return f
}

type mappingPage struct {
	basePage
	Mapping  *orchestrator.Mapping // nil on the new-mapping form
	Form     mappingForm
	Editable bool
	Error    string
	Runs     []orchestrator.Run
	Chart    *metricsChart
	// Cost is the estimated cost of the mapping's runs on external executors, in dollars.
	Cost string
}

// handleMappingNew renders the form that registers a mapping. A browser without the admin token is asked for it
// first, so that nothing typed into the form is lost to the login.
func (s *Server) handleMappingNew(w http.ResponseWriter, r *http.Request) error {
	if s.auth.configured() && s.auth.identify(r) == authNone {
		http.Redirect(w, r, loginURL(r), http.StatusSeeOther)
		return nil
	}
	return s.render(w, http.StatusOK, "mapping.html", mappingPage{
		basePage: s.base(r, "New mapping"), Editable: true,
		Form: mappingForm{Refs: strings.Join(orchestrator.RefsDefault, "\n"),
			Timeout: orchestrator.TimeoutDefault.String(), MaxAttempts: strconv.Itoa(orchestrator.MaxAttemptsDefault),
			Concurrency: strconv.Itoa(orchestrator.ConcurrencyDefault), OnNewRevision: string(orchestrator.OnNewRevisionSupersede),
			Notify: notifyRows(nil)},
	})
}

// handleMappingShow renders a mapping with its recent runs, and the edit form when the API owns it.
func (s *Server) handleMappingShow(w http.ResponseWriter, r *http.Request) error {
	m, err := s.store.MappingGetByName(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	return s.renderMapping(w, r, http.StatusOK, m, formFromMapping(m), "")
}

func (s *Server) renderMapping(w http.ResponseWriter, r *http.Request, status int, m *orchestrator.Mapping, form mappingForm, errMsg string) error {
	page := mappingPage{basePage: s.base(r, "New mapping"), Mapping: m, Form: form, Error: errMsg, Editable: true}
	if m != nil {
		page.Title = "Mapping " + m.Name
		page.Editable = m.Source == orchestrator.SourceAPI
		runs, err := s.store.RunList(r.Context(), orchestrator.RunListParams{Mapping: m.Name, Limit: 20})
		if err != nil {
			return err
		}
		page.Runs = runs
		outputs, err := s.store.RunOutputList(r.Context(), m.ID, 30)
		if err != nil {
			return err
		}
		page.Chart = newMetricsChart(outputs)
		cost, err := s.store.MappingCost(r.Context(), m.ID)
		if err != nil {
			return err
		}
		page.Cost = api.Dollars(cost)
	}
	return s.render(w, status, "mapping.html", page)
}

// formError re-renders the mapping form with the problem when err is the user's to fix.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, m *orchestrator.Mapping, form mappingForm, err error) error {
	switch orchestrator.ErrorCode(err) {
	case orchestrator.CodeInvalid, orchestrator.CodeConflict:
		noteAudit(r, "", orchestrator.ErrorMessage(err))
		return s.renderMapping(w, r, statusOf(err), m, form, orchestrator.ErrorMessage(err))
	}
	return err
}

// handleMappingCreateForm registers a mapping from the form.
func (s *Server) handleMappingCreateForm(w http.ResponseWriter, r *http.Request) error {
	form := readMappingForm(r, nil)
	noteAudit(r, strings.TrimSpace(form.Name), "")
	in, err := form.input()
	if err != nil {
		return s.formError(w, r, nil, form, err)
	}
	var rowNums []int
	if in.Notify, rowNums, err = form.notifyTargets(nil); err != nil {
		return s.formError(w, r, nil, form, err)
	}
	m, err := specMapping(in)
	if err != nil {
		return s.formError(w, r, nil, form, err)
	}
	created, err := s.store.MappingCreate(r.Context(), m)
	if err != nil {
		return s.formError(w, r, nil, form, notifyRowError(err, rowNums))
	}
	http.Redirect(w, r, "/mappings/"+url.PathEscape(created.Name), http.StatusSeeOther)
	return nil
}

// handleMappingUpdateForm saves the edit form of an API mapping.
func (s *Server) handleMappingUpdateForm(w http.ResponseWriter, r *http.Request) error {
	current, err := s.store.MappingGetByName(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	form := readMappingForm(r, current.Notify)
	form.Name = current.Name
	in, err := form.input()
	if err != nil {
		return s.formError(w, r, current, form, err)
	}
	var rowNums []int
	if in.Notify, rowNums, err = form.notifyTargets(current.Notify); err != nil {
		return s.formError(w, r, current, form, err)
	}
	m, err := specMapping(in)
	if err != nil {
		return s.formError(w, r, current, form, err)
	}
	// The form does not carry the executor: the mapping keeps its own, which the API changes.
	m.Executor, m.HFJobs = current.Executor, current.HFJobs
	noteAudit(r, "", notifyChanges(current.Notify, m.Notify))
	if _, err := s.store.MappingUpdate(r.Context(), m); err != nil {
		return s.formError(w, r, current, form, notifyRowError(err, rowNums))
	}
	http.Redirect(w, r, "/mappings/"+url.PathEscape(current.Name), http.StatusSeeOther)
	return nil
}

// handleMappingDisableForm disables an API mapping.
func (s *Server) handleMappingDisableForm(w http.ResponseWriter, r *http.Request) error {
	m, err := s.store.MappingDisable(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/mappings/"+url.PathEscape(m.Name), http.StatusSeeOther)
	return nil
}

// handleMappingRunForm starts a run on the newest recorded revision and shows it.
func (s *Server) handleMappingRunForm(w http.ResponseWriter, r *http.Request) error {
	run, err := s.store.RunOnLatest(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		var appErr *orchestrator.Error
		if errors.As(err, &appErr) && appErr.Code == orchestrator.CodeConflict {
			m, getErr := s.store.MappingGetByName(r.Context(), chi.URLParam(r, "name"))
			if getErr != nil {
				return getErr
			}
			noteAudit(r, "", appErr.Message)
			return s.renderMapping(w, r, http.StatusConflict, m, formFromMapping(m), appErr.Message)
		}
		return err
	}
	noteAudit(r, "", "new run "+strconv.FormatInt(run.ID, 10))
	http.Redirect(w, r, "/runs/"+strconv.FormatInt(run.ID, 10), http.StatusSeeOther)
	return nil
}
