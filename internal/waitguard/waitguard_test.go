package waitguard

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestStartCancelsTheWaitWhenCheckGivesAReason(t *testing.T) {
	errGone := errors.New("gone")
	var checks atomic.Int32
	ended := make(chan struct{})
	stop := Start(Every(time.Millisecond), func() error {
		if checks.Add(1) < 3 {
			return nil
		}
		return errGone
	}, func() { close(ended) })
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait was not cancelled")
	}
	if why := stop(); !errors.Is(why, errGone) {
		t.Fatalf("stop = %v, want the reason check gave", why)
	}
	if n := checks.Load(); n != 3 {
		t.Fatalf("check ran %d times, want 3: none after it gave a reason", n)
	}
}

// A check still running when the wait ends gives its reason too late:
// the wait is not cancelled, and stop reports nothing.
func TestStopEndsTheWatchWithoutCancelling(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var cancelled atomic.Bool
	stop := Start(Every(time.Millisecond), func() error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return errors.New("gone")
	}, func() { cancelled.Store(true) })
	<-entered // a check is running
	why := stop()
	close(release)
	time.Sleep(20 * time.Millisecond)
	if why != nil || cancelled.Load() {
		t.Fatalf("stop = %v, cancelled %v: want neither once the wait ended", why, cancelled.Load())
	}
}

func TestAWaitThatEndsFirstIsNeverChecked(t *testing.T) {
	stop := Start(Every(time.Hour), func() error { t.Error("check ran"); return nil }, func() { t.Error("cancel ran") })
	if why := stop(); why != nil {
		t.Fatalf("stop = %v, want nil", why)
	}
}
