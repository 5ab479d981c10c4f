package rpcbench

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

func TestThreadSleepsCountsEveryThreadBlockingInTheKernel(t *testing.T) {
	before, err := threadSleeps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const naps = 20
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A thread of its own, so the naps are not one of the main
		// thread's: every thread must be counted.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for range naps {
			ts := syscall.Timespec{Nsec: 100_000}
			syscall.Nanosleep(&ts, nil)
		}
	}()
	<-done
	after, err := threadSleeps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < naps {
		t.Fatalf("%d naps on one thread counted as %d sleeps (%d then %d)", naps, after-before, before, after)
	}
}

func TestThreadSleepsOfAMissingProcessIsAnError(t *testing.T) {
	if _, err := threadSleeps(1 << 30); err == nil || !strings.Contains(err.Error(), "no threads") {
		t.Fatalf("err = %v, want one saying the process has no threads", err)
	}
}

func TestVoluntarySwitchesReadsItsLineOfAStatusFile(t *testing.T) {
	status := "Name:\tzrpcecho\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n"
	if n, err := voluntarySwitches([]byte(status)); err != nil || n != 1234 {
		t.Fatalf("voluntarySwitches = %d, %v; want 1234", n, err)
	}
	if _, err := voluntarySwitches([]byte("Name:\tx\n")); err == nil {
		t.Fatal("a status file without the line gave no error")
	}
}

func TestSelfThreadSleepsCountsThisProcess(t *testing.T) {
	before, err := selfThreadSleeps()
	if err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range 5 {
		ts := syscall.Timespec{Nsec: 100_000}
		syscall.Nanosleep(&ts, nil)
	}
	after, err := selfThreadSleeps()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 5 {
		t.Fatalf("5 naps counted as %d sleeps", after-before)
	}
}
