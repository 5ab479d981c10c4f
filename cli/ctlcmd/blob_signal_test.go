package ctlcmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// transferSignalChildEnv makes the test binary run as the process
// TestTransferSecondInterruptEndsZrpcctl signals.
const transferSignalChildEnv = "ZRPC_TEST_TRANSFER_SIGNAL_CHILD"

// TestTransferSecondInterruptEndsZrpcctl: the first Ctrl-C cancels a
// transfer so that it cleans up; a second one ends zrpcctl even when the
// transfer is blocked where cancelling cannot reach (reading a terminal,
// opening a FIFO no one reads).
func TestTransferSecondInterruptEndsZrpcctl(t *testing.T) {
	if os.Getenv(transferSignalChildEnv) != "" {
		transferSignalChild()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTransferSecondInterruptEndsZrpcctl$")
	child.Env = append(os.Environ(), transferSignalChildEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- child.Wait()
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case line := <-lines:
			if line != want {
				t.Fatalf("child said %q, want %q", line, want)
			}
		case <-ctx.Done():
			t.Fatalf("child did not say %q", want)
		}
	}
	expect("ready")
	if err := child.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	expect("cancelled")
	// The child now blocks for good, as a transfer stuck in a read would.
	deadline := time.After(10 * time.Second)
	for {
		if err := child.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
				t.Fatalf("child ended with %v, want killed by SIGINT", err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("a second Ctrl-C did not end a transfer blocked after the first")
		}
	}
}

// transferSignalChild takes Ctrl-C as a transfer does, then blocks where
// no cancelling reaches.
func transferSignalChild() {
	cmd := &cobra.Command{}
	cmd.SetContext(context.Background())
	defer transferContext(cmd)()
	fmt.Println("ready")
	<-cmd.Context().Done()
	fmt.Println("cancelled")
	select {}
}
