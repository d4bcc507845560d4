package api

import "fmt"

// Error is the body of every error answer, {"error": "run 7 not found"}, and the error a client returns for
// it. Status, the answer's HTTP status, is not in the body: a client sets it from the answer.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

// Error returns the status and the server's message, as in "404: run 7 not found".
func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }
