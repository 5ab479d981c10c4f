package fielderr

import (
	"errors"
	"testing"
)

// TestSplitReturnsEachProblemWithItsField: Split undoes List's joining,
// keeps each field and what it wraps, and returns foreign errors with no
// field.
func TestSplitReturnsEachProblemWithItsField(t *testing.T) {
	sentinel := errors.New("sentinel")
	var l List
	if l.Err() != nil || l.Has("a") {
		t.Fatal("an empty List has problems")
	}
	l.Addf("a", "bad: %w", sentinel)
	l.Add("b", errors.New("worse"))
	if !l.Has("a") || !l.Has("b") || l.Has("c") {
		t.Fatal("Has does not see the recorded fields")
	}
	err := errors.Join(l.Err(), errors.New("foreign"))
	if !errors.Is(err, sentinel) {
		t.Error("the joined problems lost the wrapped sentinel")
	}
	got := Split(err)
	if len(got) != 3 || got[0].Field != "a" || got[1].Field != "b" || got[2].Field != "" || got[2].Err.Error() != "foreign" {
		t.Fatalf("Split = %v", got)
	}
	if got[0].Error() != "a: bad: sentinel" {
		t.Errorf("Error() = %q", got[0].Error())
	}
	if Split(nil) != nil {
		t.Error("Split(nil) is not empty")
	}
}
