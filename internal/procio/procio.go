// Package procio reads what a process has passed to read and write
// system calls, for benchmarks that count a store's page reads, WAL
// frames and checkpoints.
package procio

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Self returns the bytes this process has passed to read and write
// system calls so far (rchar and wchar of /proc/self/io, Linux only):
// reads served from the page cache count too.
func Self() (read, written int64, err error) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0, err
	}
	var found int
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		var dst *int64
		switch k {
		case "rchar":
			dst = &read
		case "wchar":
			dst = &written
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("procio: /proc/self/io: %s: %w", k, err)
		}
		*dst = n
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("procio: /proc/self/io has no rchar or wchar")
	}
	return read, written, nil
}
