package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ExporterConfig configures an [Exporter].
type ExporterConfig struct {
	// Endpoint is the OTLP/HTTP endpoint, e.g. http://otel-collector:4318;
	// spans are POSTed to its /v1/traces unless the URL already ends so.
	Endpoint string
	// Interval between exports; default 2s.
	Interval time.Duration
	// MaxQueue bounds the spans waiting for export; beyond it spans are
	// dropped and counted (Dropped). Default 4096.
	MaxQueue int
	// Timeout of one export request; default 10s.
	Timeout time.Duration
	// HTTPClient; default a client with Timeout.
	HTTPClient *http.Client
	// Logger; nil discards.
	Logger *slog.Logger
}

// Validate fills in defaults and reports every problem with c at once.
func (c *ExporterConfig) Validate() error {
	var errs []error
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Endpoint == "":
		errs = append(errs, errors.New("endpoint: empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("endpoint: %w", err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("endpoint %q: want http(s)://host:port", c.Endpoint))
	default:
		if !strings.HasSuffix(u.Path, "/v1/traces") {
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		}
		c.Endpoint = u.String()
	}
	if c.Interval < 0 || c.MaxQueue < 0 || c.Timeout < 0 {
		errs = append(errs, errors.New("interval, max queue and timeout must not be negative"))
	}
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = 4096
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.Timeout}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Exporter sends ended spans to an OTLP/HTTP endpoint in batches, JSON
// encoded (the OTLP "JSON Protobuf Encoding"). Spans are queued by
// Span.End and sent by Run; a full queue drops spans rather than slow the
// pipeline down, and a failed export drops its batch. Safe for concurrent
// use.
type Exporter struct {
	cfg ExporterConfig

	mu    sync.Mutex
	queue []*Span

	exported, dropped atomic.Uint64
}

// NewExporter validates cfg. Nothing is sent until Run.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("otlp exporter config: %w", err)
	}
	return &Exporter{cfg: cfg}, nil
}

// Exported returns the number of spans sent; Dropped those lost to a full
// queue or a failed export.
func (e *Exporter) Exported() uint64 { return e.exported.Load() }

// Dropped returns the number of spans lost to a full queue or a failed export.
func (e *Exporter) Dropped() uint64 { return e.dropped.Load() }

func (e *Exporter) enqueue(s *Span) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.queue) >= e.cfg.MaxQueue {
		e.dropped.Add(1)
		return
	}
	e.queue = append(e.queue, s)
}

// Run exports the queued spans every Interval until ctx is done, then
// exports what is left once more (bounded by Timeout) and returns nil.
func (e *Exporter) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Timeout)
			defer cancel()
			e.Flush(fctx)
			return nil
		case <-t.C:
			e.Flush(ctx)
		}
	}
}

// Flush sends the queued spans now; an error is logged and the batch
// dropped, so a collector that is down never stops the pipeline.
func (e *Exporter) Flush(ctx context.Context) {
	e.mu.Lock()
	batch := e.queue
	e.queue = nil
	e.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := e.post(ctx, batch); err != nil {
		e.dropped.Add(uint64(len(batch)))
		e.cfg.Logger.Warn("otlp export failed; spans dropped", "endpoint", e.cfg.Endpoint, "spans", len(batch), "err", err)
		return
	}
	e.exported.Add(uint64(len(batch)))
}

func (e *Exporter) post(ctx context.Context, batch []*Span) error {
	body, err := json.Marshal(encode(batch))
	if err != nil {
		return fmt.Errorf("encode spans: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// The OTLP JSON shapes (opentelemetry-proto, JSON mapping: ids in hex,
// 64-bit integers as strings, enums as numbers).
type (
	otlpRequest struct {
		ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
	}
	otlpResourceSpans struct {
		Resource   otlpResource     `json:"resource"`
		ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
	}
	otlpResource struct {
		Attributes []otlpKeyValue `json:"attributes"`
	}
	otlpScopeSpans struct {
		Scope otlpScope  `json:"scope"`
		Spans []otlpSpan `json:"spans"`
	}
	otlpScope struct {
		Name string `json:"name"`
	}
	otlpSpan struct {
		TraceID           string         `json:"traceId"`
		SpanID            string         `json:"spanId"`
		ParentSpanID      string         `json:"parentSpanId,omitempty"`
		Flags             uint32         `json:"flags"`
		Name              string         `json:"name"`
		Kind              int            `json:"kind"`
		StartTimeUnixNano string         `json:"startTimeUnixNano"`
		EndTimeUnixNano   string         `json:"endTimeUnixNano"`
		Attributes        []otlpKeyValue `json:"attributes,omitempty"`
		Status            otlpStatus     `json:"status"`
	}
	otlpStatus struct {
		Code int `json:"code,omitempty"` // 2: error
	}
	otlpKeyValue struct {
		Key   string    `json:"key"`
		Value otlpValue `json:"value"`
	}
	otlpValue struct {
		StringValue *string `json:"stringValue,omitempty"`
		IntValue    *string `json:"intValue,omitempty"`
		BoolValue   *bool   `json:"boolValue,omitempty"`
	}
)

// ScopeName is the instrumentation scope of every span.
const ScopeName = "github.com/scattergather/scattergather"

func encode(batch []*Span) otlpRequest {
	var req otlpRequest
	byService := map[string]int{}
	for _, s := range batch {
		service := s.tracer.service
		i, ok := byService[service]
		if !ok {
			i = len(req.ResourceSpans)
			byService[service] = i
			req.ResourceSpans = append(req.ResourceSpans, otlpResourceSpans{
				Resource:   otlpResource{Attributes: []otlpKeyValue{kv(Attr{"service.name", service})}},
				ScopeSpans: []otlpScopeSpans{{Scope: otlpScope{Name: ScopeName}}},
			})
		}
		sp := otlpSpan{
			TraceID:           s.ctx.TraceID.String(),
			SpanID:            s.ctx.SpanID.String(),
			Flags:             1, // sampled
			Name:              s.name,
			Kind:              int(s.kind),
			StartTimeUnixNano: strconv.FormatInt(s.start.UnixNano(), 10),
			EndTimeUnixNano:   strconv.FormatInt(s.end.UnixNano(), 10),
		}
		if !s.parent.IsZero() {
			sp.ParentSpanID = s.parent.String()
		}
		for _, a := range s.attrs {
			sp.Attributes = append(sp.Attributes, kv(a))
		}
		if s.isError {
			sp.Status.Code = 2
		}
		ss := &req.ResourceSpans[i].ScopeSpans[0]
		ss.Spans = append(ss.Spans, sp)
	}
	return req
}

func kv(a Attr) otlpKeyValue {
	var v otlpValue
	switch x := a.Value.(type) {
	case int:
		s := strconv.Itoa(x)
		v.IntValue = &s
	case int64:
		s := strconv.FormatInt(x, 10)
		v.IntValue = &s
	case bool:
		v.BoolValue = &x
	case string:
		v.StringValue = &x
	default:
		s := fmt.Sprint(x)
		v.StringValue = &s
	}
	return otlpKeyValue{Key: a.Key, Value: v}
}
