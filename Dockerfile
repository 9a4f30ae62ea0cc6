# Multi-stage build of a static scattergather binary, run as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/scattergather ./cmd/scattergather

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/scattergather /usr/local/bin/scattergather
USER nonroot:nonroot
# Container defaults: every role serves /metrics, /healthz and /readyz on
# 9090 and the gateway its API on 8080, on every interface (outside a
# container the binary listens on 127.0.0.1 unless told otherwise). A flag
# or an SG_* variable of the deployment overrides them.
ENV SG_METRICS_ADDR=0.0.0.0:9090 \
    SG_ADMIN_ADDR=0.0.0.0:9090 \
    SG_ADDR=0.0.0.0:8080 \
    SG_LOG_FORMAT=json
EXPOSE 9090 8080
# The distroless image has no shell or curl: the binary probes its own
# /readyz (scattergather healthcheck exits 0 on 2xx, 1 otherwise).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/scattergather", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/scattergather"]
