package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/schemas"
)

// Defaults of [HTTPConfig].
const (
	DefaultHTTPTimeout          = 30 * time.Second
	DefaultHTTPMaxResponseBytes = 4 << 20
)

// The headers the [HTTP] handler sends with each task.
const (
	HeaderCorrelationID = "X-Correlation-ID"
	HeaderPartID        = "X-Part-ID"
	HeaderPartCount     = "X-Part-Count"
	HeaderRoute         = "X-Route"
	HeaderAttempt       = "X-Attempt"
	// HeaderDeadline is the task's deadline in RFC 3339 with nanoseconds;
	// absent when the task has none. A service should give up by then.
	HeaderDeadline = "X-Deadline"
)

// HTTPConfig configures the [HTTP] handler.
type HTTPConfig struct {
	// URL is where tasks are POSTed; required unless PerRecipient covers
	// every part. "{part}" and "{route}" in it are replaced by the task's
	// part id and route (path-escaped), so that one processor can reach a
	// different host or path per shard: "http://search-{part}:8080/search".
	URL string
	// PerRecipient maps a part id (a broadcast recipient, or a shard of a
	// split route) to its own URL, which wins over URL. The same
	// placeholders apply.
	PerRecipient map[string]string
	// Timeout caps one try; default 30s. The task's deadline caps it too:
	// a try cut by the deadline is answered EXPIRED, a try cut by Timeout
	// is a failure and retried.
	Timeout time.Duration
	// Headers are added to every request (after the X-* headers above, which
	// they cannot replace).
	Headers map[string]string
	// MaxResponseBytes caps the body read from a 2xx response; default
	// 4 MiB. A larger body is a permanent error.
	MaxResponseBytes int64
	// Client sends the requests; nil builds one with a pooled transport
	// (64 idle connections per host) that does not follow redirects.
	Client *http.Client
}

// Validate reports every problem with c at once.
func (c HTTPConfig) Validate() error {
	var errs []error
	if c.URL == "" && len(c.PerRecipient) == 0 {
		errs = append(errs, errors.New("url: none given (and no per-recipient urls)"))
	}
	if c.URL != "" {
		if err := checkURL(c.URL); err != nil {
			errs = append(errs, fmt.Errorf("url: %w", err))
		}
	}
	for part, u := range c.PerRecipient {
		if err := checkURL(u); err != nil {
			errs = append(errs, fmt.Errorf("url of recipient %s: %w", part, err))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative", c.Timeout))
	}
	if c.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("max response bytes: %d is negative", c.MaxResponseBytes))
	}
	for k := range c.Headers {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			errs = append(errs, fmt.Errorf("header %q: not a valid header name", k))
		}
	}
	return errors.Join(errs...)
}

func checkURL(raw string) error {
	u, err := url.Parse(strings.NewReplacer("{part}", "p", "{route}", "r").Replace(raw))
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", raw)
	}
	return nil
}

// HTTP returns a handler that POSTs each task's payload, with its content
// type, to the configured URL: the part's entry in PerRecipient, else URL.
// The request carries the X-Correlation-ID, X-Part-ID, X-Part-Count,
// X-Route, X-Attempt and X-Deadline headers. The answer maps to the result:
//
//   - 2xx: OK, the response body is the part's payload;
//   - 408, 429, 5xx, a connection error or a try past HTTPConfig.Timeout:
//     an error the processor retries with its backoff (Config.Retries,
//     Config.Backoff), then reports as ERROR;
//   - any other status (4xx, and 3xx: redirects are not followed): a
//     [Permanent] error, ERROR at once;
//   - the task's deadline passing during the call: EXPIRED.
//
// An error names the method, URL and status and quotes up to 256 bytes of
// the response body: "POST http://quotes/acme: 503 Service Unavailable:
// upstream down". The handler is safe for concurrent use.
func HTTP(cfg HTTPConfig) (Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http handler: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultHTTPTimeout
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultHTTPMaxResponseBytes
	}
	if cfg.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		cfg.Client = &http.Client{
			Transport: tr,
			// A 301/302 would turn the POST into a GET; say so instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &httpHandler{cfg: cfg}, nil
}

type httpHandler struct{ cfg HTTPConfig }

// bodyExcerpt is how much of an error response's body goes into the error.
const bodyExcerpt = 256

func (h *httpHandler) url(t schemas.Task) (string, error) {
	raw, ok := h.cfg.PerRecipient[string(t.PartID)]
	if !ok {
		raw = h.cfg.URL
	}
	if raw == "" {
		return "", Permanent(fmt.Errorf("no url for part %q of route %s", t.PartID, t.Route))
	}
	return strings.NewReplacer("{part}", url.PathEscape(string(t.PartID)), "{route}", url.PathEscape(string(t.Route))).Replace(raw), nil
}

func (h *httpHandler) Handle(ctx context.Context, t schemas.Task) ([]byte, error) {
	target, err := h.url(t)
	if err != nil {
		return nil, err
	}
	// Only the per-try cap is ours; the task's deadline is already on ctx.
	tctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, http.MethodPost, target, bytes.NewReader(t.Payload))
	if err != nil {
		return nil, Permanent(fmt.Errorf("POST %s: %w", target, err))
	}
	for k, v := range h.cfg.Headers {
		req.Header.Set(k, v)
	}
	ct := t.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set(HeaderCorrelationID, string(t.CorrelationID))
	req.Header.Set(HeaderPartID, string(t.PartID))
	req.Header.Set(HeaderPartCount, strconv.Itoa(t.PartCount))
	req.Header.Set(HeaderRoute, string(t.Route))
	req.Header.Set(HeaderAttempt, strconv.Itoa(t.Attempt))
	if !t.Deadline.IsZero() {
		req.Header.Set(HeaderDeadline, t.Deadline.UTC().Format(time.RFC3339Nano))
	}

	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// The task's deadline or a shutdown: the runner tells which.
			return nil, fmt.Errorf("POST %s: %w", target, ctx.Err())
		}
		if tctx.Err() != nil {
			return nil, fmt.Errorf("POST %s: no answer within %s", target, h.cfg.Timeout)
		}
		return nil, fmt.Errorf("POST %s: %w", target, unwrapURLError(err))
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, bodyExcerpt+1))
		err := fmt.Errorf("POST %s: %s%s", target, resp.Status, quoteBody(excerpt))
		if retryableStatus(resp.StatusCode) {
			return nil, err
		}
		return nil, Permanent(err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, h.cfg.MaxResponseBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("POST %s: reading the response: %w", target, ctx.Err())
		}
		return nil, fmt.Errorf("POST %s: reading the response: %w", target, err)
	}
	if int64(len(body)) > h.cfg.MaxResponseBytes {
		return nil, Permanent(fmt.Errorf("POST %s: %s with a body over the limit of %d bytes", target, resp.Status, h.cfg.MaxResponseBytes))
	}
	return body, nil
}

// retryableStatus reports whether a try answered with code may succeed when
// tried again: the server timed out, throttled, or failed.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// quoteBody renders up to bodyExcerpt bytes of b for an error text, on one
// line.
func quoteBody(b []byte) string {
	cut := len(b) > bodyExcerpt
	if cut {
		b = b[:bodyExcerpt]
		for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if !utf8.FullRune(b[i:]) {
					b = b[:i] // drop a rune the cut split
				}
				break
			}
		}
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if s == "" {
		return ""
	}
	if cut {
		s += " …"
	}
	return ": " + s
}

// unwrapURLError drops the *url.Error wrapper, which repeats the method and
// URL the caller already names; a dial error keeps its own text.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		var op *net.OpError
		if errors.As(ue.Err, &op) {
			return op
		}
		return ue.Err
	}
	return err
}
