// Package store defines where bouncer keeps what it learned: the raw
// reports it accepted (so they can be classified again when the rules get
// better) and the events read from them. One interface, Store, has two
// engines: store/sqlite (the embedded default) and store/clickhouse (for
// production scale, built by the ingest issue). Every write is idempotent:
// reports and events carry deterministic ids, so a redelivered NATS message
// stores nothing twice.
package store
