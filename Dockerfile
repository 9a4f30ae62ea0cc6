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
ENTRYPOINT ["/usr/local/bin/scattergather"]
