package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuIdle reads the idle and total jiffies of all CPUs from /proc/stat.
func cpuIdle() (idle, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, err
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return idle, total, nil
}

// waitIdle waits until the machine's CPUs have been at least share idle
// for 5 seconds in a row, or until limit has passed, and says which. On
// a machine shared with other jobs, a round run in the middle of someone
// else's build measures that build.
func waitIdle(share float64, limit time.Duration) {
	if share <= 0 {
		return
	}
	start := time.Now()
	quiet := 0
	i0, t0, err := cpuIdle()
	if err != nil {
		fmt.Println("cannot read the CPU idle time:", err)
		return
	}
	for quiet < 5 {
		if time.Since(start) > limit {
			fmt.Printf("the CPUs were not %.0f%% idle for 5 s within %s: measuring anyway (load %s)\n", 100*share, limit, loadAvg())
			return
		}
		time.Sleep(time.Second)
		i1, t1, err := cpuIdle()
		if err != nil {
			return
		}
		if t1 > t0 && float64(i1-i0)/float64(t1-t0) >= share {
			quiet++
		} else {
			quiet = 0
		}
		i0, t0 = i1, t1
	}
	if waited := time.Since(start); waited > 6*time.Second {
		fmt.Printf("waited %.0f s for the CPUs to be %.0f%% idle\n", waited.Seconds(), 100*share)
	}
}
