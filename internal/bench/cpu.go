package bench

import (
	"syscall"
	"time"
)

// cpuTime returns the user plus system CPU time this process has used so
// far, all goroutines (and an embedded broker) included; zero if the
// system cannot tell.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
