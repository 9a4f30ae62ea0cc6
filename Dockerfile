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
# 9090: /metrics, /healthz, /readyz when a role runs with
# --metrics-addr 0.0.0.0:9090 (as in compose.yaml); 8080: the gateway.
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/scattergather"]
