package replay

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Bar draws a run's [Progress] as a progress bar with rate and ETA:
//
//	[=============>            ]  52%  5,210/10,000 offsets  5,190 sent  1,840/s  ETA 2s
//
// On a terminal (TTY) it redraws one line at most every 100ms; elsewhere
// (a log file, CI) it writes a line at most every 5s. The last update
// (Done, or the one Finish repeats) is always written. Not safe for
// concurrent use; Config.Progress calls it from Run's goroutine.
type Bar struct {
	W   io.Writer
	TTY bool
	// Now is the clock; default time.Now.
	Now func() time.Time

	last    time.Time
	pending *Progress // last update not drawn
	width   int       // of the last line drawn on a TTY
}

// Update draws p if it is time to.
func (b *Bar) Update(p Progress) {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	every := 5 * time.Second
	if b.TTY {
		every = 100 * time.Millisecond
	}
	t := now()
	if !p.Done && !b.last.IsZero() && t.Sub(b.last) < every {
		b.pending = &p
		return
	}
	b.last, b.pending = t, nil
	b.draw(p)
}

// Finish draws the last update if it was held back and ends the line.
func (b *Bar) Finish() {
	if b.pending != nil {
		b.draw(*b.pending)
		b.pending = nil
	}
	if b.TTY && b.width > 0 {
		fmt.Fprintln(b.W)
		b.width = 0
	}
}

func (b *Bar) draw(p Progress) {
	line := FormatProgress(p)
	if !b.TTY {
		fmt.Fprintln(b.W, line)
		return
	}
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.width = len(line)
	fmt.Fprint(b.W, "\r"+line+pad)
}

// FormatProgress formats p as one line (see [Bar]).
func FormatProgress(p Progress) string {
	const cells = 28
	frac := 1.0
	if p.Total > 0 {
		frac = min(max(float64(p.Advanced)/float64(p.Total), 0), 1)
	}
	filled := int(frac * cells)
	bar := strings.Repeat("=", filled)
	if filled < cells {
		bar += ">" + strings.Repeat(" ", cells-filled-1)
	}
	eta := "ETA ?"
	switch {
	case p.Done:
		eta = "done"
	case p.ETA >= 0:
		eta = "ETA " + p.ETA.Round(time.Second).String()
	}
	s := fmt.Sprintf("[%s] %3.0f%%  %s/%s offsets  %s sent", bar, frac*100, thousands(p.Advanced), thousands(p.Total), thousands(p.Submitted))
	if p.Skipped > 0 {
		s += fmt.Sprintf("  %s skipped", thousands(p.Skipped))
	}
	return s + fmt.Sprintf("  %s/s  %s", thousands(int64(p.Rate+0.5)), eta)
}

// thousands formats n with commas: 12,345.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
