// Command accuracy measures the classifier against a labelled corpus of real
// bounces (../shared/ndr-corpus: emails/ and labels.jsonl) and prints
// coverage, agreement on recipient, class, reason and status, a confusion
// table, the worst mismatches and the speed.
//
//	go run ./cmd/accuracy [--corpus DIR] [--rules FILE] [--worst N] [--repeat N] [--cores N] [--cpuprofile FILE]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/bouncer-mail/bouncer/classify"
	"github.com/bouncer-mail/bouncer/rules"
)

func main() {
	corpus := flag.String("corpus", "../shared/ndr-corpus", "corpus `dir` holding emails/ and labels.jsonl")
	rulesPath := flag.String("rules", "", "extra rules `file`")
	worst := flag.Int("worst", 40, "list this many worst mismatches")
	repeat := flag.Int("repeat", 20, "classify the corpus this many times for the speed figure")
	cores := flag.Int("cores", 1, "GOMAXPROCS while measuring (1: the single-core figure, GC included)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to `file` (go tool pprof)")
	flag.Parse()
	rs, err := rules.Default()
	if *rulesPath != "" {
		rs, err = rules.Load(*rulesPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "accuracy:", err)
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*cores)
	var prof *os.File
	if *cpuprofile != "" {
		if prof, err = os.Create(*cpuprofile); err == nil {
			err = pprof.StartCPUProfile(prof)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "accuracy:", err)
			os.Exit(2)
		}
	}
	rep, err := Run(classify.New(rs), *corpus, *repeat)
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "accuracy:", err)
		os.Exit(1)
	}
	rep.Print(os.Stdout, *worst)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		fmt.Printf("\npeak RSS %.1f MB (whole process, corpus held in memory)\n", float64(ru.Maxrss)/1024)
	}
}
