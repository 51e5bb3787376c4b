// Package deploy holds no code: it is what runs bouncer outside `go run`
// (Prometheus rules and their promtool tests, the Grafana dashboard, the
// Alertmanager example, docker-compose, systemd units, Kubernetes
// manifests, ClickHouse cluster notes). Its tests check those files with
// the real tools where they run here (promtool, amtool, systemd-analyze)
// and against the code (flag names, default ports, metric names), so the
// files cannot drift from the binary. docs/deploy.md explains them.
package deploy
