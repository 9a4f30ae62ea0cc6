package gateway

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// apiError is the answer to input the gateway refuses: an HTTP status, one
// of the Code* constants and a message that names the problem.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badInput(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// write answers e.
func (e *apiError) write(w http.ResponseWriter) {
	writeJSON(w, e.status, ErrorBody{Error: e.msg, Code: e.code})
}

// submission is what a POST /v1/routes/{route}/requests asks for, before
// its body is read.
type submission struct {
	id    schemas.CorrelationID
	route scatterer.Route
	// timeout is the request's time from submission to its deadline: the
	// ?timeout= given, else the route's default. explicit is the ?timeout=
	// given (what goes on the record), zero when none was.
	timeout, explicit time.Duration
	fanout            *int // nil: the route's default
	wait              time.Duration
}

// The query parameters each endpoint takes; any other is a 400, so that a
// typo (?timout=2s) is not silently a request with the default timeout.
var (
	submitParams = []string{"timeout", "fanout", "wait"}
	getParams    = []string{"wait"}
)

// parseQuery parses raw strictly: it must be well formed (url.ParseQuery,
// which refuses bad escapes and ';'), name only known parameters and name
// each at most once.
func parseQuery(raw string, known []string) (url.Values, *apiError) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badInput(http.StatusBadRequest, CodeBadRequest, "query string: %v", err)
	}
	for k, vs := range q {
		switch {
		case len(known) == 0:
			return nil, badInput(http.StatusBadRequest, CodeBadRequest, "unknown query parameter %q; this endpoint takes none", k)
		case !slices.Contains(known, k):
			return nil, badInput(http.StatusBadRequest, CodeBadRequest, "unknown query parameter %q; this endpoint takes %s", k, strings.Join(known, ", "))
		case len(vs) > 1:
			return nil, badInput(http.StatusBadRequest, CodeBadRequest, "query parameter %s is given %d times; give it once", k, len(vs))
		}
	}
	return q, nil
}

// parseSubmit checks everything about a submission but its body: the
// route named in the path, the query (timeout, fanout, wait) and the
// X-Correlation-ID header (a new id when there is none). It is a pure
// function of its input (FuzzParseSubmit) and never panics.
func (g *Gateway) parseSubmit(routeName, rawQuery string, h http.Header) (submission, *apiError) {
	rt, err := g.lookupRoute(routeName)
	if err != nil {
		return submission{}, err
	}
	q, err := parseQuery(rawQuery, submitParams)
	if err != nil {
		return submission{}, err
	}
	s := submission{route: rt, timeout: rt.Timeout}
	if q.Has("timeout") {
		d, err := parseTimeout(q.Get("timeout"), rt)
		if err != nil {
			return submission{}, err
		}
		s.timeout, s.explicit = d, d
	}
	if q.Has("fanout") {
		n, err := parseFanout(q.Get("fanout"), rt)
		if err != nil {
			return submission{}, err
		}
		s.fanout = &n
	}
	if s.wait, err = g.parseWaitValue(q); err != nil {
		return submission{}, err
	}
	if s.id, err = parseCorrelationID(h); err != nil {
		return submission{}, err
	}
	return s, nil
}

// lookupRoute returns the configured route called name.
func (g *Gateway) lookupRoute(name string) (scatterer.Route, *apiError) {
	rt, ok := g.routes[schemas.Route(name)]
	if !ok {
		names := make([]string, 0, len(g.cfg.Routes))
		for _, r := range g.cfg.Routes {
			names = append(names, string(r.Name))
		}
		return scatterer.Route{}, badInput(http.StatusNotFound, CodeUnknownRoute, "route %q is not configured; routes: %s", name, strings.Join(names, ", "))
	}
	return rt, nil
}

// parseTimeout reads ?timeout=: a Go duration in (0, the route's maximum].
// The request record carries whole milliseconds, so a timeout must be at
// least 1ms and is cut to whole milliseconds: the deadline the gateway
// reports is then the one the scatterer sets.
func parseTimeout(s string, rt scatterer.Route) (time.Duration, *apiError) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, badInput(http.StatusBadRequest, CodeInvalidTimeout, "timeout %q is not a duration like 2s or 500ms", s)
	case d <= 0:
		return 0, badInput(http.StatusBadRequest, CodeInvalidTimeout, "timeout %s must be positive", d)
	case d < time.Millisecond:
		return 0, badInput(http.StatusBadRequest, CodeInvalidTimeout, "timeout %s is below the smallest, 1ms", d)
	case d > rt.MaxTimeout:
		return 0, badInput(http.StatusBadRequest, CodeInvalidTimeout, "timeout %s exceeds route %s's maximum of %s", d, rt.Name, rt.MaxTimeout)
	}
	return d.Truncate(time.Millisecond), nil
}

// parseFanout reads ?fanout=: a whole number in 1..the route's maximum,
// or on a broadcast route exactly its number of recipients.
func parseFanout(s string, rt scatterer.Route) (int, *apiError) {
	n, err := strconv.Atoi(s)
	switch {
	case err != nil || s != strconv.Itoa(n): // no sign, no leading zeros
		return 0, badInput(http.StatusBadRequest, CodeInvalidFanout, "fanout %q is not a whole number", s)
	case rt.Mode == scatterer.Broadcast && n != len(rt.Recipients):
		return 0, badInput(http.StatusBadRequest, CodeInvalidFanout, "fanout %d: broadcast route %s always has its %d recipients", n, rt.Name, len(rt.Recipients))
	case n < 1 || n > rt.MaxFanout:
		return 0, badInput(http.StatusBadRequest, CodeInvalidFanout, "fanout %d is outside 1..%d for route %s", n, rt.MaxFanout, rt.Name)
	}
	return n, nil
}

// parseWaitValue reads ?wait= from q: a duration in [0, MaxWait]; zero
// when absent.
func (g *Gateway) parseWaitValue(q url.Values) (time.Duration, *apiError) {
	if !q.Has("wait") {
		return 0, nil
	}
	s := q.Get("wait")
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, badInput(http.StatusBadRequest, CodeInvalidWait, "wait %q is not a duration like 5s or 500ms", s)
	case d < 0:
		return 0, badInput(http.StatusBadRequest, CodeInvalidWait, "wait %s is negative", d)
	case d > g.cfg.MaxWait:
		return 0, badInput(http.StatusBadRequest, CodeInvalidWait, "wait %s exceeds the maximum of %s; poll the Location instead", d, g.cfg.MaxWait)
	}
	return d, nil
}

// parseCorrelationID reads the X-Correlation-ID header: at most one, of 1
// to 128 of A-Z a-z 0-9 . _ : -; a new id when there is none.
func parseCorrelationID(h http.Header) (schemas.CorrelationID, *apiError) {
	vs := h.Values(HeaderCorrelationID)
	switch {
	case len(vs) == 0:
		return client.NewCorrelationID(), nil
	case len(vs) > 1:
		return "", badInput(http.StatusBadRequest, CodeInvalidID, "%s is given %d times; give it once", HeaderCorrelationID, len(vs))
	case !validID.MatchString(vs[0]):
		return "", badInput(http.StatusBadRequest, CodeInvalidID, "%s %q: want 1 to 128 of A-Z a-z 0-9 . _ : -", HeaderCorrelationID, vs[0])
	}
	return schemas.CorrelationID(vs[0]), nil
}

// parseContentType returns the payload's content type: the header's, with
// two conveniences for curl users: no header, or curl's default form type,
// on a body that is JSON means JSON (else bytes). A header that does not
// parse is a 400, and so is a JSON type on a body that is not JSON.
func parseContentType(header string, body []byte) (string, *apiError) {
	if header == "" {
		if len(body) > 0 && json.Valid(body) {
			return "application/json", nil
		}
		return "application/octet-stream", nil
	}
	mt, _, err := mime.ParseMediaType(header)
	if err != nil {
		return "", badInput(http.StatusBadRequest, CodeBadRequest, "Content-Type %q: %v", header, err)
	}
	if typ, sub, _ := strings.Cut(mt, "/"); typ == "" || sub == "" {
		// mime.ParseMediaType takes a lone token; processors should not
		// have to.
		return "", badInput(http.StatusBadRequest, CodeBadRequest, "Content-Type %q: want type/subtype, e.g. application/json", header)
	}
	switch {
	case mt == "application/x-www-form-urlencoded":
		if len(body) > 0 && json.Valid(body) {
			return "application/json", nil
		}
	case isJSON(mt):
		if !json.Valid(body) {
			return "", badInput(http.StatusBadRequest, CodeInvalidJSON, "the body is not valid JSON but its Content-Type is %s", mt)
		}
	}
	return header, nil
}

// isJSON reports whether the media type mt (lower case, as
// mime.ParseMediaType returns it) is JSON.
func isJSON(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }
