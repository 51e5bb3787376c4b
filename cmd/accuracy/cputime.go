package main

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used (user and system), so
// the speed figure can be given per CPU second as well as per wall second:
// on a shared machine the wall figure measures the load, the CPU figure
// the work. With GOMAXPROCS=1 it includes the garbage collector's share.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
