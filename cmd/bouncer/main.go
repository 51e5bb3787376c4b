// Command bouncer receives, reads and classifies the bounces of outgoing
// mail. Without a subcommand it serves everything in one process; the
// subcommands are tools over the same code:
//
//	bouncer classify [--rules FILE] [FILE|DIR|-]...
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage: bouncer <command> [flags] [args]

commands:
  classify [--rules FILE] [FILE|DIR|-]...   classify bounce messages, one JSON line per message
`

// run dispatches a command line and returns the process exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "bouncer: the service is not built yet; see README.md\n\n"+usage)
		return 2
	}
	switch args[0] {
	case "classify":
		return runClassify(args[1:], stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "bouncer: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
