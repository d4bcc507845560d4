package orchestrator

import (
	"errors"
	"fmt"
)

// Code classifies an application error. The web package maps each code to one HTTP status, in one place.
type Code string

// Error codes.
const (
	CodeInvalid      Code = "invalid"      // the request is malformed or fails validation
	CodeNotFound     Code = "not_found"    // the thing asked for does not exist
	CodeConflict     Code = "conflict"     // the request clashes with the current state
	CodeUnauthorized Code = "unauthorized" // credentials are missing or wrong
	CodeTooLarge     Code = "too_large"    // the request body exceeds the limit
	CodeUnavailable  Code = "unavailable"  // a dependency (the database) cannot be reached; retry later
	CodeInternal     Code = "internal"     // anything else
)

// Error is an application error: a code, a message that is safe to show to the caller, and an optional
// underlying error for the logs. An Error without a message of its own says what Err says.
type Error struct {
	Code    Code
	Message string
	Err     error
}

// Error implements the error interface.
func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Message
	case e.Message == "":
		return e.Err.Error()
	}
	return e.Message + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an *Error with the given code and message that wraps err.
func WrapError(code Code, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, or CodeInternal when there is none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the caller-safe message of the first *Error in err's chain, or a generic text. For
// errors the caller caused (invalid, not found, conflict, too large) it includes the wrapped error's text, which
// says what is wrong; for the others it hides it, since it may speak of our internals.
func ErrorMessage(err error) string {
	var e *Error
	if !errors.As(err, &e) {
		return "internal error"
	}
	switch e.Code {
	case CodeInvalid, CodeNotFound, CodeConflict, CodeTooLarge:
		return e.Error()
	}
	return e.Message
}
