package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// staticHandler serves the embedded stylesheet and scripts.
func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}

var templateFuncs = template.FuncMap{
	"ts": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"shellJoin":    orchestrator.ShellJoin,
	"notifyEvents": func() []orchestrator.NotifyEvent { return orchestrator.NotifyEvents },
	"envLines":     envLines,
	"datasetURL":   func(dataset string) string { return "https://huggingface.co/datasets/" + dataset },
	"commitURL": func(dataset, sha string) string {
		return "https://huggingface.co/datasets/" + dataset + "/commit/" + sha
	},
	"ago":   func(t time.Time) string { return humanAgo(time.Since(t)) },
	"bytes": humanBytes,
	// seconds writes a whole number of seconds as a Go duration: "1m30s".
	"seconds": func(s float64) string { return (time.Duration(s) * time.Second).String() },
	"duration": func(start, end *time.Time) string {
		if start == nil {
			return ""
		}
		stop := time.Now()
		if end != nil {
			stop = *end
		}
		return stop.Sub(*start).Round(time.Second).String()
	},
	// finalStatuses lists the statuses a run never leaves, for the run page's script.
	"finalStatuses": func() string {
		names := make([]string, len(orchestrator.RunFinalStatuses))
		for i, s := range orchestrator.RunFinalStatuses {
			names[i] = string(s)
		}
		return strings.Join(names, " ")
	},
}

// parseTemplates parses every page with the shared layout, once, at start-up.
func parseTemplates() (map[string]*template.Template, error) {
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*template.Template)
	for _, page := range pages {
		name := strings.TrimPrefix(page, "templates/")
		if name == "layout.html" {
			continue
		}
		t, err := template.New(name).Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html", page)
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// basePage holds what every page shows.
type basePage struct {
	Title string
	Now   time.Time
	// CSRF is the token the page's forms send back.
	CSRF string
	// LoggedIn tells whether the browser holds the admin token (session or Basic auth).
	LoggedIn bool
	// AdminConfigured tells whether an admin token is set at all.
	AdminConfigured bool
	// LoginNeeded tells whether the page offers links to the login form in place of its buttons that change
	// state: an admin token is set and the browser does not hold it.
	LoginNeeded bool
	// LoginURL is the login form that leads back to this page.
	LoginURL string
	// RiverUI tells whether River's UI is mounted.
	RiverUI bool
}

// base returns the basePage of a request.
func (s *Server) base(r *http.Request, title string) basePage {
	loggedIn := s.auth.identify(r) != authNone
	return basePage{
		Title: title, Now: time.Now(), CSRF: s.auth.csrfToken(r), LoggedIn: loggedIn,
		AdminConfigured: s.auth.configured(), LoginNeeded: s.auth.configured() && !loggedIn,
		LoginURL: loginURL(r), RiverUI: s.riverUI != nil,
	}
}

// render executes a page into a buffer and writes it only when that succeeded, so that an error never
// produces half a page.
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) error {
	t, ok := s.templates[name]
	if !ok {
		return fmt.Errorf("no template %s", name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
	return nil
}

type errorPage struct {
	basePage
	Status  int
	Message string
}

// renderError writes an error page; if even that fails, plain text.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	page := errorPage{basePage: s.base(r, http.StatusText(status)), Status: status, Message: msg}
	if err := s.render(w, status, "error.html", page); err != nil {
		http.Error(w, msg, status)
	}
}

func humanAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func humanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// envLines writes env as sorted KEY=VALUE lines.
func envLines(env map[string]string) string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + env[k] + "\n")
	}
	return b.String()
}
