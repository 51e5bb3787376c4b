# bouncer container image: static binaries on a distroless, non-root base.
#   docker build -t bouncer .
#   docker run -p 25:2525 -p 8025:8025 -e BOUNCER_DOMAIN=bounces.example.com \
#     -e BOUNCER_VERP_KEYS=... -v bouncer-data:/var/lib/bouncer bouncer
# Ingest workers (cmd/ingest) run from the same image:
#   docker run --entrypoint /usr/local/bin/bouncer-ingest -e BOUNCER_HTTP_ADDR=0.0.0.0:8026 \
#     -e BOUNCER_NATS_URL=nats://... -e BOUNCER_CLICKHOUSE_DSN=clickhouse://... bouncer
# The image listens on every address (the binaries' defaults are loopback);
# docs/deploy.md covers compose, Kubernetes and the rest.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Pure Go (SQLite is modernc.org/sqlite): a static binary, no libc.
ENV CGO_ENABLED=0 GOOS=linux
RUN go build -trimpath -ldflags='-s -w' -o /out/bouncer ./cmd/bouncer \
 && go build -trimpath -ldflags='-s -w' -o /out/bouncer-ingest ./cmd/ingest \
 && install -d -o 65532 -g 65532 -m 0750 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bouncer /out/bouncer-ingest /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /var/lib/bouncer
# distroless "nonroot": uid and gid 65532.
USER 65532:65532
ENV BOUNCER_SMTP_ADDR=0.0.0.0:2525 \
    BOUNCER_HTTP_ADDR=0.0.0.0:8025 \
    BOUNCER_NATS_LISTEN=0.0.0.0:4222 \
    BOUNCER_DATA_DIR=/var/lib/bouncer
VOLUME ["/var/lib/bouncer"]
# SMTP (map port 25 to it), HTTP API and /metrics, embedded NATS; 8026 is
# bouncer-ingest's probes and /metrics (BOUNCER_HTTP_ADDR above says 8025
# for both binaries: set it to 0.0.0.0:8026 for ingest, as compose and the
# k8s manifests do).
EXPOSE 2525 8025 4222 8026
ENTRYPOINT ["/usr/local/bin/bouncer"]
