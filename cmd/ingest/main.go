// Command ingest will consume raw reports and sync reply logs from NATS
// JetStream, classify and correlate them, and write events to the store, as
// its own process for deployments that scale out (DESIGN.md "Data flow").
// The in-process all-in-one `bouncer` runs the same pipeline.
//
// TODO: built by the ingest issue; today it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "ingest: not built yet; see DESIGN.md and the ingest issue")
	os.Exit(2)
}
