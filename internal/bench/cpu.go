package bench

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
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

// machineCPU is a reading of the whole machine's CPU counters: every
// process's, a broker's of its own included. Zero where the system does
// not have /proc/stat (only Linux has).
type machineCPU struct {
	// busy and total are summed over all CPUs, in clock ticks; idle is
	// total minus busy (idle and iowait).
	busy, total int64
	cpus        int
}

// readMachineCPU reads /proc/stat.
func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	return parseProcStat(b)
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat (user nice
// system idle iowait irq softirq steal guest guest_nice; guest time is
// already in user) and counts the "cpuN" lines.
func parseProcStat(b []byte) machineCPU {
	var m machineCPU
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		if f[0] != "cpu" {
			m.cpus++
			continue
		}
		for i, s := range f[1:] {
			if i >= 8 { // guest and guest_nice are counted in user and nice
				break
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return machineCPU{}
			}
			m.total += n
			if i != 3 && i != 4 { // idle, iowait
				m.busy += n
			}
		}
	}
	return m
}

// busyCores returns the CPUs the whole machine kept busy on average from
// m to later, and its idle share in percent; ok is false when either
// reading is missing.
func (m machineCPU) busyCores(later machineCPU) (cores, idlePct float64, ok bool) {
	dt := later.total - m.total
	if m.total == 0 || later.cpus == 0 || dt <= 0 {
		return 0, 0, false
	}
	busy := float64(later.busy-m.busy) / float64(dt)
	return busy * float64(later.cpus), (1 - busy) * 100, true
}
