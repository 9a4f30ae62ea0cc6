package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The commands record spans with the OpenTelemetry SDK, configured as every
// OpenTelemetry program is, by the standard environment variables (the
// SDK reads them; this file only decides whether to build it):
//
//   - OTEL_EXPORTER_OTLP_ENDPOINT (base URL, /v1/traces appended) or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL), or the
//     --otlp-endpoint flag, which overrides both: setting one turns the
//     spans on. With none, no span is recorded and the roles pass each
//     record's traceparent on unchanged.
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none: off even so.
//   - OTEL_SERVICE_NAME: default scattergather-<role>;
//     OTEL_RESOURCE_ATTRIBUTES: more resource attributes.
//   - OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: default parentbased_always_on.
//   - OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, _TIMEOUT, _COMPRESSION,
//     _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY, _INSECURE, and
//     _PROTOCOL (http/protobuf or http/json; there is no gRPC exporter);
//     OTEL_BSP_* (the batch span processor).

// traceShutdownTimeout bounds the flush of the spans when a command stops.
const traceShutdownTimeout = 5 * time.Second

// traceSettings is what the commands decide about tracing; the SDK reads
// the rest of the environment itself.
type traceSettings struct {
	// on: build a TracerProvider with an OTLP/HTTP exporter.
	on bool
	// endpointURL, from --otlp-endpoint, overrides the environment's.
	endpointURL string
}

// traceSettings reads --otlp-endpoint and the variables that turn tracing
// on or off; getenv is os.Getenv outside tests.
func (o *observeFlags) traceSettings(getenv func(string) string) (traceSettings, error) {
	var s traceSettings
	if o.otlpEndpoint != "" {
		u, err := url.Parse(o.otlpEndpoint)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return s, fmt.Errorf("--otlp-endpoint %q: want http(s)://host:port", o.otlpEndpoint)
		}
		// As OTEL_EXPORTER_OTLP_ENDPOINT: a base URL.
		if !strings.HasSuffix(u.Path, "/v1/traces") {
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		}
		s.endpointURL = u.String()
	}
	s.on = s.endpointURL != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		s.on = false
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "", "otlp":
	case "none":
		s.on = false
	default:
		return s, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: only otlp (OTLP over HTTP) and none are supported", exp)
	}
	if !s.on {
		return s, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch protocol {
	case "", "http/protobuf", "http/json":
	default:
		return s, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %s: only http/protobuf and http/json are supported (OTLP over HTTP, port 4318)", protocol)
	}
	return s, nil
}

// traceResource is the resource of role's spans: service.name
// scattergather-<role>, then the environment's (OTEL_RESOURCE_ATTRIBUTES,
// OTEL_SERVICE_NAME), which wins, and the SDK's own attributes.
func traceResource(ctx context.Context, role string) (*resource.Resource, error) {
	return resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "scattergather-"+role)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK())
}

// newTracerProvider builds role's TracerProvider: a batch span processor
// and an OTLP/HTTP exporter, configured by s and the environment. Shut it
// down to flush it.
func newTracerProvider(ctx context.Context, s traceSettings, role string) (*sdktrace.TracerProvider, error) {
	res, err := traceResource(ctx, role)
	if err != nil {
		return nil, fmt.Errorf("trace resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	var opts []otlptracehttp.Option
	if s.endpointURL != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(s.endpointURL))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	// The sampler is the SDK's: OTEL_TRACES_SAMPLER and _ARG, by default
	// parentbased_always_on.
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// shutdownTraces flushes and stops tps, for at most traceShutdownTimeout
// in all; spans it could not send are lost, and logged.
func shutdownTraces(ctx context.Context, log *slog.Logger, tps []*sdktrace.TracerProvider) {
	if len(tps) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceShutdownTimeout)
	defer cancel()
	var errs []error
	for _, tp := range tps {
		errs = append(errs, tp.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		log.Warn("trace spans not flushed at shutdown", "err", err)
	}
}
