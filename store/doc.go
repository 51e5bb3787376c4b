// Package store will hold bouncer's storage: one interface, with engines for
// ClickHouse (store/clickhouse) and SQLite (store/sqlite), versioned
// migrations, the batch writer and the queries the HTTP API needs
// (DESIGN.md "Store"). Nothing lives here yet.
package store
