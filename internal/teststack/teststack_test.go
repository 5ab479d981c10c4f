package teststack

import (
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testwait"
)

func parkedHere(ready chan<- struct{}, release <-chan struct{}) {
	close(ready)
	<-release
}

// TestGoroutinesFindsAParkedGoroutineByItsFunctionsAndState: a goroutine
// blocked on a channel in parkedHere is found by its function, by its
// function and state, and no longer once it returned; a function no
// goroutine runs finds nothing.
func TestGoroutinesFindsAParkedGoroutineByItsFunctionsAndState(t *testing.T) {
	const fn = "teststack.parkedHere("
	ready, release := make(chan struct{}), make(chan struct{})
	go parkedHere(ready, release)
	<-ready
	testwait.For(t, 10*time.Second, "the goroutine to park on its receive", func() bool {
		return len(Goroutines("chan receive", fn)) == 1
	})
	if got := Goroutines("", fn); len(got) != 1 || !strings.Contains(got[0], fn) {
		t.Fatalf("Goroutines(%q) = %d stacks, want the parked one", fn, len(got))
	}
	if got := Goroutines("select", fn); len(got) != 0 {
		t.Fatalf("Goroutines in select = %d, want none: it waits on a receive", len(got))
	}
	if got := Goroutines("", fn, "no.such.function("); len(got) != 0 {
		t.Fatalf("Goroutines with a function it does not run = %d, want none", len(got))
	}
	close(release)
	testwait.For(t, 10*time.Second, "the goroutine to end", func() bool { return len(Goroutines("", fn)) == 0 })
}
