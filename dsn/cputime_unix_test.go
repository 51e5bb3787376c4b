//go:build unix

package dsn

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used, so that timing tests
// measure work, not the load of the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
