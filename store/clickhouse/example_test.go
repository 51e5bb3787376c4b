package clickhouse_test

import (
	"fmt"

	"github.com/bouncer-mail/bouncer/store/clickhouse"
)

// The cluster schema for a cluster named "mail" and the database
// "bouncer", as a file for clickhouse-client --multiquery.
func ExampleClusterDDL() {
	for _, stmt := range clickhouse.ClusterDDL("mail", "bouncer") {
		fmt.Printf("%s;\n\n", stmt)
	}
	// Output:
	// CREATE DATABASE IF NOT EXISTS `bouncer` ON CLUSTER `mail`;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`schema_migrations` ON CLUSTER `mail` (
	// 	version UInt32,
	// 	applied DateTime('UTC')
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/bouncer/schema_migrations', '{replica}')
	// ORDER BY version;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`reports_local` ON CLUSTER `mail` (
	// 	id String,
	// 	received DateTime('UTC'),
	// 	return_path String,
	// 	recipients Array(String),
	// 	client_ip String,
	// 	helo String,
	// 	tls String,
	// 	raw String,
	// 	parse_error String
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/reports_local', '{replica}')
	// PARTITION BY toYYYYMM(received)
	// ORDER BY id;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`events_local` ON CLUSTER `mail` (
	// 	id String,
	// 	version UInt32,
	// 	report_id String,
	// 	idx UInt32,
	// 	time DateTime('UTC'),
	// 	source String,
	// 	recipient String,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	scope String,
	// 	status String,
	// 	reply_code UInt16,
	// 	action String,
	// 	diagnostic String,
	// 	remote_mta String,
	// 	reporting_mta String,
	// 	smtp_command String,
	// 	provider String,
	// 	parser String,
	// 	rule String,
	// 	message_id String,
	// 	stream String DEFAULT '',
	// 	return_path String DEFAULT ''
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/events_local', '{replica}', version)
	// PARTITION BY toYYYYMM(time)
	// ORDER BY (recipient, time, id)
	// SETTINGS index_granularity = 1024;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`report_versions_local` ON CLUSTER `mail` (
	// 	report_id String,
	// 	version UInt32,
	// 	time DateTime('UTC')
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/report_versions_local', '{replica}', version)
	// ORDER BY (report_id, time)
	// SETTINGS index_granularity = 1024;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`outcomes_local` ON CLUSTER `mail` (
	// 	key String,
	// 	version UInt64,
	// 	stream String,
	// 	message_id String,
	// 	recipient String,
	// 	state String,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	scope String,
	// 	provider String,
	// 	final UInt8,
	// 	first DateTime('UTC'),
	// 	last DateTime('UTC'),
	// 	observations UInt32
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/outcomes_local', '{replica}', version)
	// ORDER BY (recipient, key);
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`suppressions_local` ON CLUSTER `mail` (
	// 	address String,
	// 	stream String,
	// 	version UInt64,
	// 	removed UInt8,
	// 	source String,
	// 	class String,
	// 	reason String,
	// 	rule String,
	// 	since Int64,
	// 	until Int64,
	// 	actor String,
	// 	note String
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/suppressions_local', '{replica}', version)
	// ORDER BY (address, stream)
	// SETTINGS index_granularity = 256;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`suppression_audit_local` ON CLUSTER `mail` (
	// 	address String,
	// 	time Int64,
	// 	stream String,
	// 	action String,
	// 	source String,
	// 	actor String,
	// 	note String,
	// 	class String,
	// 	reason String,
	// 	rule String
	// )
	// ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/bouncer/suppression_audit_local', '{replica}')
	// ORDER BY (address, time)
	// SETTINGS index_granularity = 256;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_log_local` ON CLUSTER `mail` (
	// 	time DateTime('UTC'),
	// 	kind Enum8('event' = 1, 'set' = 2, 'report' = 3),
	// 	report_id String,
	// 	id String,
	// 	version UInt32,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String
	// )
	// ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/bouncer/stats_log_local', '{replica}')
	// PARTITION BY toYYYYMM(time)
	// ORDER BY (time, report_id, id)
	// SETTINGS index_granularity = 1024;
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_seconds_local` ON CLUSTER `mail` (
	// 	second DateTime('UTC'),
	// 	gen UInt64,
	// 	total UInt8,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String,
	// 	events UInt64,
	// 	reports UInt64
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/stats_seconds_local', '{replica}', gen)
	// PARTITION BY toYYYYMM(second)
	// ORDER BY (second, total, class, reason, provider);
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_minutes_local` ON CLUSTER `mail` (
	// 	minute DateTime('UTC'),
	// 	gen UInt64,
	// 	total UInt8,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String,
	// 	events UInt64,
	// 	reports UInt64
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/stats_minutes_local', '{replica}', gen)
	// PARTITION BY toYYYYMM(minute)
	// ORDER BY (minute, total, class, reason, provider);
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`report_keys_local` ON CLUSTER `mail` (
	// 	received DateTime('UTC'),
	// 	key UInt64
	// )
	// ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/bouncer/report_keys_local', '{replica}')
	// PARTITION BY toYYYYMM(received)
	// ORDER BY (received, key);
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`reports` ON CLUSTER `mail` (
	// 	id String,
	// 	received DateTime('UTC'),
	// 	return_path String,
	// 	recipients Array(String),
	// 	client_ip String,
	// 	helo String,
	// 	tls String,
	// 	raw String,
	// 	parse_error String
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'reports_local', cityHash64(id));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`events` ON CLUSTER `mail` (
	// 	id String,
	// 	version UInt32,
	// 	report_id String,
	// 	idx UInt32,
	// 	time DateTime('UTC'),
	// 	source String,
	// 	recipient String,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	scope String,
	// 	status String,
	// 	reply_code UInt16,
	// 	action String,
	// 	diagnostic String,
	// 	remote_mta String,
	// 	reporting_mta String,
	// 	smtp_command String,
	// 	provider String,
	// 	parser String,
	// 	rule String,
	// 	message_id String,
	// 	stream String DEFAULT '',
	// 	return_path String DEFAULT ''
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'events_local', cityHash64(recipient));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`report_versions` ON CLUSTER `mail` (
	// 	report_id String,
	// 	version UInt32,
	// 	time DateTime('UTC')
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'report_versions_local', cityHash64(report_id));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`outcomes` ON CLUSTER `mail` (
	// 	key String,
	// 	version UInt64,
	// 	stream String,
	// 	message_id String,
	// 	recipient String,
	// 	state String,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	scope String,
	// 	provider String,
	// 	final UInt8,
	// 	first DateTime('UTC'),
	// 	last DateTime('UTC'),
	// 	observations UInt32
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'outcomes_local', cityHash64(recipient));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`suppressions` ON CLUSTER `mail` (
	// 	address String,
	// 	stream String,
	// 	version UInt64,
	// 	removed UInt8,
	// 	source String,
	// 	class String,
	// 	reason String,
	// 	rule String,
	// 	since Int64,
	// 	until Int64,
	// 	actor String,
	// 	note String
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'suppressions_local', cityHash64(address));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`suppression_audit` ON CLUSTER `mail` (
	// 	address String,
	// 	time Int64,
	// 	stream String,
	// 	action String,
	// 	source String,
	// 	actor String,
	// 	note String,
	// 	class String,
	// 	reason String,
	// 	rule String
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'suppression_audit_local', cityHash64(address));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_log` ON CLUSTER `mail` (
	// 	time DateTime('UTC'),
	// 	kind Enum8('event' = 1, 'set' = 2, 'report' = 3),
	// 	report_id String,
	// 	id String,
	// 	version UInt32,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'stats_log_local', intDiv(toUInt32(time), 60));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_seconds` ON CLUSTER `mail` (
	// 	second DateTime('UTC'),
	// 	gen UInt64,
	// 	total UInt8,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String,
	// 	events UInt64,
	// 	reports UInt64
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'stats_seconds_local', intDiv(toUInt32(second), 60));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`stats_minutes` ON CLUSTER `mail` (
	// 	minute DateTime('UTC'),
	// 	gen UInt64,
	// 	total UInt8,
	// 	class Enum8('hard' = 1, 'soft' = 2, 'greylist' = 3, 'complaint' = 4, 'autoreply' = 5, 'delivered' = 6, 'unknown' = 7),
	// 	reason String,
	// 	provider String,
	// 	events UInt64,
	// 	reports UInt64
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'stats_minutes_local', intDiv(toUInt32(minute), 60));
	//
	// CREATE TABLE IF NOT EXISTS `bouncer`.`report_keys` ON CLUSTER `mail` (
	// 	received DateTime('UTC'),
	// 	key UInt64
	// )
	// ENGINE = Distributed('mail', 'bouncer', 'report_keys_local', key);
	//
	// INSERT INTO `bouncer`.`schema_migrations` (version, applied) SELECT 8, now();
}
