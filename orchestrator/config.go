package orchestrator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// configFile is the shape of the YAML configuration file.
type configFile struct {
	Mappings []mappingSpec `yaml:"mappings"`
}

// mappingSpec is one mapping as written in the YAML file.
type mappingSpec struct {
	Name        string            `yaml:"name"`
	Dataset     string            `yaml:"dataset"`
	Refs        []string          `yaml:"refs"`
	Command     []string          `yaml:"command"`
	Workdir     string            `yaml:"workdir"`
	Env         map[string]string `yaml:"env"`
	Timeout     yamlDuration      `yaml:"timeout"`
	MaxAttempts int               `yaml:"max_attempts"`
	QuietPeriod yamlDuration      `yaml:"quiet_period"`
	MaxWait     yamlDuration      `yaml:"max_wait"`
	Concurrency int               `yaml:"concurrency"`
	OnNewRev    string            `yaml:"on_new_revision"`
	RunOnBase   bool              `yaml:"run_on_baseline"`
	VerifyRev   bool              `yaml:"verify_revision"`
	Queue       string            `yaml:"queue"`
	Notify      []NotifyTarget    `yaml:"notify"`

	line int
}

// yamlDuration is a time.Duration written as a Go duration string ("90m", "2h").
type yamlDuration time.Duration

// UnmarshalYAML parses a duration string and reports the line of a bad one.
func (d *yamlDuration) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return fmt.Errorf("line %d: must be a duration such as 90m or 2h", node.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 90m or 2h", node.Line, s)
	}
	*d = yamlDuration(v)
	return nil
}

// LoadConfig reads the YAML configuration file at path and returns its mappings, validated, with defaults
// applied and relative workdirs resolved against the file's directory.
func LoadConfig(path string) ([]Mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve config path: %w", err)
	}
	mappings, err := ParseConfig(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return mappings, nil
}

// ParseConfig parses a YAML configuration. Unknown keys, bad durations, invalid mappings and duplicate names are
// errors that name the line and the mapping. Relative workdirs are resolved against baseDir.
func ParseConfig(data []byte, baseDir string) ([]Mapping, error) {
	var file configFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
		return nil, WrapError(CodeInvalid, err, "invalid configuration")
	}

	// A second pass over the node tree finds the line of each mapping, for messages about whole mappings.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		lines := mappingLines(&root)
		for i := range file.Mappings {
			if i < len(lines) {
				file.Mappings[i].line = lines[i]
			}
		}
	}

	seen := make(map[string]int, len(file.Mappings))
	mappings := make([]Mapping, 0, len(file.Mappings))
	for i, spec := range file.Mappings {
		where := fmt.Sprintf("mapping %d (line %d)", i+1, spec.line)
		if spec.Name != "" {
			where = fmt.Sprintf("mapping %q (line %d)", spec.Name, spec.line)
		}
		if first, dup := seen[spec.Name]; dup {
			return nil, Errorf(CodeInvalid, "%s: duplicate name, first declared on line %d", where, first)
		}
		seen[spec.Name] = spec.line

		workdir := spec.Workdir
		if workdir != "" && !filepath.IsAbs(workdir) {
			workdir = filepath.Join(baseDir, workdir)
		}
		m := Mapping{
			Name:        spec.Name,
			Dataset:     spec.Dataset,
			Refs:        spec.Refs,
			Command:     spec.Command,
			Workdir:     workdir,
			Env:         spec.Env,
			Timeout:     time.Duration(spec.Timeout),
			MaxAttempts: spec.MaxAttempts,
			QuietPeriod: time.Duration(spec.QuietPeriod), MaxWait: time.Duration(spec.MaxWait),
			Concurrency: spec.Concurrency, OnNewRevision: spec.OnNewRev,
			RunOnBaseline: spec.RunOnBase, VerifyRevision: spec.VerifyRev, Queue: spec.Queue, Notify: spec.Notify,
			Source:  SourceFile,
			Enabled: true,
		}.WithDefaults()
		if err := m.Validate(); err != nil {
			return nil, Errorf(CodeInvalid, "%s: %s", where, ErrorMessage(err))
		}
		mappings = append(mappings, m)
	}
	return mappings, nil
}

// mappingLines returns the line of each element of the top-level "mappings" sequence.
func mappingLines(root *yaml.Node) []int {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value != "mappings" {
			continue
		}
		var lines []int
		for _, item := range doc.Content[i+1].Content {
			lines = append(lines, item.Line)
		}
		return lines
	}
	return nil
}
