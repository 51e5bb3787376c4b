// Package reliability is bouncer's end-to-end fault harness. It starts the
// real programs as separate processes — the bouncer and bouncer-ingest
// binaries built from this module, a throwaway clickhouse-server, and two
// Postfix instances configured in temporary directories — loads them, injects
// process-level faults and checks the listener's promise (DESIGN.md "Data
// flow", step 1): every report answered 250 is stored exactly once.
//
// Two topologies:
//
//   - all-in-one: one bouncer process with its embedded NATS, in-process
//     ingest and SQLite under a temporary --data-dir;
//   - split: a bouncer process (listener and embedded NATS, writing
//     ClickHouse; a listener only in soak-clickhouse) and a separate
//     bouncer-ingest worker sharing its durable consumer, storing into a
//     throwaway ClickHouse server.
//
// The load is this package's own SMTP client (Load): every message is a
// unique RFC 3464 report of a 5.1.1 rejection, and the SHA-256 of the bytes
// of every message answered 250 is recorded, which is the report id bouncer
// stores. Like a sending MTA, the client resends a message that got a 4xx
// or lost its connection, byte for byte, so a resend must be deduplicated.
// After the fault the harness waits until JetStream has handed every report
// to ingest and compares the record with the store (Check): acknowledged
// but not stored is lost, a recipient with more than one event is a
// duplicate. Both must be zero.
//
// The Postfix scenarios use no synthetic reports at all: a Postfix instance
// relays mail to a second Postfix instance that rejects the recipients
// (550 5.1.1 User unknown in local recipient table), the first writes real
// DSNs to the envelope sender, a VERP return path at bouncer's bounce
// domain, and its transport map delivers them to bouncer's SMTP port.
//
// Scenarios are listed in Scenarios; cmd/reliability runs them from the
// command line and reliability_test.go in CI (short mode). docs/reliability.md
// holds the figures measured with them.
package reliability
