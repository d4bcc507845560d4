package orchestrator

import "strings"

// Names returns values as a list for people, in their order: "webhook, manual".
func Names[S ~string](values []S) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = string(v)
	}
	return strings.Join(parts, ", ")
}

// OneOf returns values as a choice for people, in their order: "queue, supersede or cancel_running".
func OneOf[S ~string](values []S) string {
	if len(values) < 2 {
		return Names(values)
	}
	return Names(values[:len(values)-1]) + " or " + string(values[len(values)-1])
}
