package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
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
	"join": strings.Join,
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
	page := errorPage{basePage: basePage{Title: http.StatusText(status), Now: time.Now()}, Status: status, Message: msg}
	if err := s.render(w, status, "error.html", page); err != nil {
		http.Error(w, msg, status)
	}
}

type homePage struct {
	basePage
	Mappings   []orchestrator.Mapping
	Runs       []orchestrator.Run
	Deliveries []orchestrator.DeliveryRecord
}

// handleHome renders the dashboard: mappings, recent runs, recent deliveries.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	mappings, err := s.store.MappingList(ctx)
	if err != nil {
		return err
	}
	runs, err := s.store.RunList(ctx, orchestrator.RunListParams{Limit: 50})
	if err != nil {
		return err
	}
	deliveries, err := s.store.DeliveryList(ctx, orchestrator.DeliveryListParams{Limit: 20})
	if err != nil {
		return err
	}
	return s.render(w, http.StatusOK, "home.html", homePage{
		basePage: basePage{Title: "Runs", Now: time.Now()},
		Mappings: mappings, Runs: runs, Deliveries: deliveries,
	})
}
