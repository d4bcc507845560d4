package orchestrator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// configFile is the shape of the YAML configuration file.
type configFile struct {
	Mappings []mappingSpec `yaml:"mappings"`
}

// mappingSpec is a MappingSpec under the name that the YAML decoder's messages about a malformed entry give
// it: "cannot unmarshal !!str into orchestrator.mappingSpec".
type mappingSpec MappingSpec

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
	var lines []int
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		lines = mappingLines(&root)
	}

	seen := make(map[string]int, len(file.Mappings))
	mappings := make([]Mapping, 0, len(file.Mappings))
	for i, spec := range file.Mappings {
		line := 0
		if i < len(lines) {
			line = lines[i]
		}
		where := fmt.Sprintf("mapping %d (line %d)", i+1, line)
		if spec.Name != "" {
			where = fmt.Sprintf("mapping %q (line %d)", spec.Name, line)
		}
		if first, dup := seen[spec.Name]; dup {
			return nil, Errorf(CodeInvalid, "%s: duplicate name, first declared on line %d", where, first)
		}
		seen[spec.Name] = line

		if spec.Workdir != "" && !filepath.IsAbs(spec.Workdir) {
			spec.Workdir = filepath.Join(baseDir, spec.Workdir)
		}
		m, err := MappingSpec(spec).Mapping()
		if err == nil {
			// Checked here first, as Validate's message about them names the mapping, which where does already.
			err = m.PathFilter().Validate()
		}
		if err == nil {
			m.Source, m.Enabled = SourceFile, true
			m = m.WithDefaults()
			err = m.Validate()
		}
		if err != nil {
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
