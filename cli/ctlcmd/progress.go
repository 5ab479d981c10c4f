package ctlcmd

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progressInterval is the least time between two drawings of a progress
// bar: about ten redraws per second.
const progressInterval = 100 * time.Millisecond

// progressBarWidth is the number of cells of the bar itself.
const progressBarWidth = 20

// progressBar draws the progress of one transfer on one terminal line,
// redrawn in place: a bar, bytes done of the total, percent and rate. When
// its writer is not a terminal it draws nothing, so that logs and pipes see
// only the command's result. It is not safe for concurrent use: a transfer
// reports its progress from one goroutine.
type progressBar struct {
	w     io.Writer // nil: draw nothing
	label string
	total int64 // < 0 when unknown (e.g. stdin)
	now   func() time.Time

	start    time.Time
	lastDraw time.Time
	done     int64
	width    int // the longest line drawn, to blank what a shorter one leaves
	// sentNote, when set, follows the bar once every byte is sent and the
	// transfer is not finished (a put's agents are storing the blob).
	sentNote string
}

// newProgressBar returns a bar for a transfer of total bytes (< 0: unknown)
// that draws on w if w is a terminal.
func newProgressBar(w io.Writer, label string, total int64) *progressBar {
	if !isTerminal(w) {
		w = nil
	}
	return newProgressBarTo(w, label, total, time.Now)
}

// newProgressBarTo returns a bar that draws on w (nil: nowhere) with the
// clock now.
func newProgressBarTo(w io.Writer, label string, total int64, now func() time.Time) *progressBar {
	const maxLabel = 32
	if len(label) > maxLabel {
		label = "..." + label[len(label)-maxLabel+3:]
	}
	return &progressBar{w: w, label: label, total: total, now: now, start: now()}
}

// isTerminal reports whether w is a terminal (/dev/null, a character
// device too, is not).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// set records that done bytes have been transferred; it redraws unless the
// last drawing is younger than progressInterval.
func (b *progressBar) set(done int64) {
	b.done = done
	if b.w == nil {
		return
	}
	now := b.now()
	last := b.total >= 0 && done >= b.total
	if !last && !b.lastDraw.IsZero() && now.Sub(b.lastDraw) < progressInterval {
		return
	}
	b.lastDraw = now
	b.draw(now)
}

// add records n more bytes transferred.
func (b *progressBar) add(n int) { b.set(b.done + int64(n)) }

// finish draws the last state and ends the line, so that what is printed
// next, a result or an error, starts on a line of its own.
func (b *progressBar) finish() {
	if b.w == nil {
		return
	}
	b.sentNote = ""
	b.draw(b.now())
	fmt.Fprintln(b.w)
	b.w = nil
}

func (b *progressBar) draw(now time.Time) {
	line := b.line(now.Sub(b.start))
	pad := max(b.width-len(line), 0)
	b.width = max(b.width, len(line))
	fmt.Fprintf(b.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// line is the text of one drawing after elapsed time.
func (b *progressBar) line(elapsed time.Duration) string {
	var s strings.Builder
	s.WriteString(b.label)
	done := uint64(max(b.done, 0))
	if b.total >= 0 {
		frac := 1.0
		if b.total > 0 {
			frac = min(float64(done)/float64(b.total), 1)
		}
		filled := int(frac * progressBarWidth)
		fmt.Fprintf(&s, " [%s%s] %3.0f%%  %s / %s", strings.Repeat("=", filled),
			strings.Repeat(" ", progressBarWidth-filled), frac*100, formatSize(done), formatSize(uint64(b.total)))
	} else {
		fmt.Fprintf(&s, "  %s", formatSize(done))
	}
	if secs := elapsed.Seconds(); secs > 0 {
		fmt.Fprintf(&s, "  %s/s", formatSize(uint64(float64(done)/secs)))
	}
	if b.sentNote != "" && b.total >= 0 && b.done >= b.total {
		s.WriteString("  " + b.sentNote)
	}
	return s.String()
}
