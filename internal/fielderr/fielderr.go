// Package fielderr reports the problems of a configuration field by field.
// Each problem is an *Error naming the field as the package that checks it
// calls it; a caller that shows the field to its users under another name
// (the agent's setting keys) renames it with Rename. So each bound is
// checked in the package that depends on it, and its message still names
// the setting the user wrote.
//
// It is not a general error package: the API's errors are api/apierr's.
package fielderr

import (
	"errors"
	"fmt"
	"time"
)

// Error is one field's problem.
type Error struct {
	// Field names the field, as the package that reported it knows it.
	Field string
	// Err says what is wrong with it.
	Err error
}

func (e *Error) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns Err, so errors.Is sees the sentinels it wraps.
func (e *Error) Unwrap() error { return e.Err }

// List collects the problems of one configuration, so Validate can report
// them all at once. The zero value is empty and ready.
type List struct {
	errs []error
}

// Addf records a problem of field, formatted as by fmt.Errorf (%w wraps).
func (l *List) Addf(field, format string, args ...any) {
	l.Add(field, fmt.Errorf(format, args...))
}

// Positive records a problem of field unless the duration d is above zero.
func (l *List) Positive(field string, d time.Duration) {
	if d <= 0 {
		l.Addf(field, "must be positive, got %s", d)
	}
}

// Add records err as a problem of field.
func (l *List) Add(field string, err error) {
	l.errs = append(l.errs, &Error{Field: field, Err: err})
}

// Has reports whether a problem of field has been recorded.
func (l *List) Has(field string) bool {
	for _, err := range l.errs {
		if fe, ok := err.(*Error); ok && fe.Field == field {
			return true
		}
	}
	return false
}

// Err returns every recorded problem joined, or nil when there is none.
func (l *List) Err() error { return errors.Join(l.errs...) }

// Split returns the problems in err: err itself, or each one errors.Join
// joined (recursively). Problems that are not an *Error are returned with
// an empty Field.
func Split(err error) []*Error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range j.Unwrap() {
			out = append(out, Split(e)...)
		}
		return out
	}
	if fe, ok := err.(*Error); ok {
		return []*Error{fe}
	}
	return []*Error{{Err: err}}
}
