package gateway

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// parseGateway is a gateway that is never run, for the parsers: a split
// route and a broadcast route.
func parseGateway(tb testing.TB) *Gateway {
	tb.Helper()
	g, err := New(Config{
		Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}},
		Routes: []scatterer.Route{
			{Name: "echo", Mode: scatterer.Split, Fanout: 2, MaxFanout: 8, Timeout: 10 * time.Second, MaxTimeout: time.Minute},
			{Name: "quotes", Mode: scatterer.Broadcast, Recipients: []schemas.PartID{"fast", "slow", "stuck"}, Timeout: 5 * time.Second},
		},
		MaxWait: 30 * time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// header builds the headers of a submission: ids holds the
// X-Correlation-ID values, one a line (none when empty).
func header(ids, contentType string) http.Header {
	h := http.Header{}
	if ids != "" {
		for id := range strings.SplitSeq(ids, "\n") {
			h.Add(HeaderCorrelationID, id)
		}
	}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return h
}

func TestParseSubmit(t *testing.T) {
	g := parseGateway(t)
	for _, tc := range []struct {
		name, route, query, ids string
		// want: the timeout, explicit timeout, fanout (0: none) and wait
		timeout, explicit, wait time.Duration
		fanout                  int
		// or the error
		status     int
		code, says string
	}{
		{name: "defaults", route: "echo", timeout: 10 * time.Second},
		{name: "every option", route: "echo", query: "timeout=2s&fanout=3&wait=5s", ids: "my-id.1:a_b",
			timeout: 2 * time.Second, explicit: 2 * time.Second, fanout: 3, wait: 5 * time.Second},
		{name: "sub-millisecond part cut", route: "echo", query: "timeout=1.9ms", timeout: time.Millisecond, explicit: time.Millisecond},
		{name: "broadcast fanout matches", route: "quotes", query: "fanout=3", timeout: 5 * time.Second, fanout: 3},
		{name: "route default max timeout", route: "quotes", query: "timeout=5m", timeout: 5 * time.Minute, explicit: 5 * time.Minute},
		{name: "escaped value", route: "echo", query: "timeout=%32s", timeout: 2 * time.Second, explicit: 2 * time.Second},
		{name: "empty wait", route: "echo", query: "wait=", status: 400, code: CodeInvalidWait, says: `wait "" is not a duration`},
		{name: "empty timeout", route: "echo", query: "timeout=", status: 400, code: CodeInvalidTimeout, says: `timeout "" is not a duration`},
		{name: "unknown route", route: "nope", status: 404, code: CodeUnknownRoute, says: `route "nope" is not configured; routes: echo, quotes`},
		{name: "route of invalid UTF-8", route: "\xff", status: 404, code: CodeUnknownRoute, says: `route "\xff"`},
		{name: "timeout overflow", route: "echo", query: "timeout=9999999999h", status: 400, code: CodeInvalidTimeout, says: "is not a duration"},
		{name: "timeout 1ns", route: "echo", query: "timeout=1ns", status: 400, code: CodeInvalidTimeout, says: "below the smallest, 1ms"},
		{name: "timeout over broadcast default max", route: "quotes", query: "timeout=6m", status: 400, code: CodeInvalidTimeout, says: "exceeds route quotes's maximum of 5m0s"},
		{name: "fanout huge", route: "echo", query: "fanout=99999999999999999999", status: 400, code: CodeInvalidFanout, says: "is not a whole number"},
		{name: "fanout negative", route: "echo", query: "fanout=-1", status: 400, code: CodeInvalidFanout, says: "outside 1..8"},
		{name: "broadcast fanout other", route: "quotes", query: "fanout=1", status: 400, code: CodeInvalidFanout, says: "always has its 3 recipients"},
		{name: "wait negative", route: "echo", query: "wait=-1s", status: 400, code: CodeInvalidWait, says: "negative"},
		{name: "unknown parameter", route: "echo", query: "fan-out=2", status: 400, code: CodeBadRequest, says: `unknown query parameter "fan-out"`},
		{name: "parameter without value", route: "echo", query: "fanout", status: 400, code: CodeInvalidFanout, says: `fanout "" is not a whole number`},
		{name: "repeated parameter", route: "echo", query: "wait=1s&wait=2s", status: 400, code: CodeBadRequest, says: "wait is given 2 times"},
		{name: "bad escape", route: "echo", query: "wait=%", status: 400, code: CodeBadRequest, says: "invalid URL escape"},
		{name: "two correlation ids", route: "echo", ids: "a\nb", status: 400, code: CodeInvalidID, says: "X-Correlation-ID is given 2 times"},
		{name: "empty correlation id", route: "echo", ids: " ", status: 400, code: CodeInvalidID, says: `X-Correlation-ID " "`},
		{name: "long correlation id", route: "echo", ids: strings.Repeat("a", 129), status: 400, code: CodeInvalidID, says: "want 1 to 128"},
		{name: "correlation id of invalid UTF-8", route: "echo", ids: "a\xffb", status: 400, code: CodeInvalidID, says: `"a\xffb"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := g.parseSubmit(tc.route, tc.query, header(tc.ids, ""))
			if tc.status != 0 {
				if err == nil {
					t.Fatalf("accepted: %+v", sub)
				}
				if err.status != tc.status || err.code != tc.code || !strings.Contains(err.msg, tc.says) {
					t.Fatalf("error %d %s %q, want %d %s saying %q", err.status, err.code, err.msg, tc.status, tc.code, tc.says)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			fanout := 0
			if sub.fanout != nil {
				fanout = *sub.fanout
			}
			if sub.timeout != tc.timeout || sub.explicit != tc.explicit || sub.wait != tc.wait || fanout != tc.fanout || string(sub.route.Name) != tc.route {
				t.Errorf("got %+v (fanout %d)", sub, fanout)
			}
			if tc.ids != "" && string(sub.id) != tc.ids {
				t.Errorf("id %q, want %q", sub.id, tc.ids)
			}
			if tc.ids == "" && !validID.MatchString(string(sub.id)) {
				t.Errorf("generated id %q is not valid", sub.id)
			}
		})
	}
}

func TestParseContentType(t *testing.T) {
	for _, tc := range []struct {
		name, header, body, want string
		code                     string
	}{
		{name: "none on JSON", body: `{"a":1}`, want: "application/json"},
		{name: "none on bytes", body: "plain", want: "application/octet-stream"},
		{name: "none on nothing", body: "", want: "application/octet-stream"},
		{name: "curl's form type on JSON", header: "application/x-www-form-urlencoded", body: `[1]`, want: "application/json"},
		{name: "form type on a form", header: "application/x-www-form-urlencoded", body: "a=1", want: "application/x-www-form-urlencoded"},
		{name: "JSON", header: "application/json; charset=utf-8", body: `"s"`, want: "application/json; charset=utf-8"},
		{name: "vendor JSON", header: "application/problem+json", body: `{}`, want: "application/problem+json"},
		{name: "upper-case JSON type", header: "Application/JSON", body: `{}`, want: "Application/JSON"},
		{name: "text", header: "text/plain", body: "{", want: "text/plain"},
		{name: "JSON type, not JSON", header: "application/json", body: `{"a":`, code: CodeInvalidJSON},
		{name: "JSON type, empty body", header: "application/json", body: "", code: CodeInvalidJSON},
		{name: "vendor JSON, not JSON", header: "application/vnd.x+json", body: "x", code: CodeInvalidJSON},
		{name: "malformed", header: "a/b; =x", body: "{}", code: CodeBadRequest},
		{name: "no subtype", header: "json", body: "{}", code: CodeBadRequest},
		{name: "duplicate parameter", header: "text/plain; a=1; a=2", body: "x", code: CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseContentType(tc.header, []byte(tc.body))
			if tc.code != "" {
				if err == nil || err.code != tc.code || err.status != http.StatusBadRequest {
					t.Fatalf("got %q, %v; want a 400 %s", got, err, tc.code)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// codes are the error codes a submission's input can earn.
var inputCodes = []string{CodeBadRequest, CodeInvalidTimeout, CodeInvalidFanout, CodeInvalidWait, CodeInvalidJSON, CodeInvalidID, CodeUnknownRoute}

// FuzzParseSubmit feeds arbitrary routes, query strings, X-Correlation-ID
// headers (one a line), Content-Types and bodies to the parsers of POST
// /v1/routes/{route}/requests. Every input must be refused with a 400 or
// 404, a known code and a readable message, or accepted within every
// limit, as a request record that encodes and decodes to what was asked.
// None may panic. Seeds: the cases above and testdata/fuzz/FuzzParseSubmit.
func FuzzParseSubmit(f *testing.F) {
	g := parseGateway(f)
	for _, s := range []struct{ route, query, ids, ct, body string }{
		{"echo", "", "", "", `{"q":"red shoes"}`},
		{"echo", "timeout=2s&fanout=3&wait=5s", "id-1", "application/json", `{"q":1}`},
		{"quotes", "fanout=3&timeout=1.5ms", "", "text/plain; charset=utf-8", "plain"},
		{"echo", "timeout=%zz", "", "", ""},
		{"echo", "timeout=1s;fanout=2", "a\nb", "application/json", `{"q":`},
		{"nope", "wait=-1s", "has space", "a/b; =x", "\xff"},
		{"echo", "fanout=99999999999999999999&wait=1h", strings.Repeat("x", 129), "application/x-www-form-urlencoded", "[1,2]"},
	} {
		f.Add(s.route, s.query, s.ids, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route, query, ids, ct string, body []byte) {
		h := header(ids, ct)
		sub, err := g.parseSubmit(route, query, h)
		var contentType string
		if err == nil {
			contentType, err = parseContentType(ct, body)
		}
		if err != nil {
			if err.status != http.StatusBadRequest && err.status != http.StatusNotFound {
				t.Fatalf("status %d for bad input: %v", err.status, err)
			}
			if !slices.Contains(inputCodes, err.code) {
				t.Fatalf("code %q: %v", err.code, err)
			}
			if err.msg == "" || !utf8.ValidString(err.msg) {
				t.Fatalf("message %q is empty or not UTF-8", err.msg)
			}
			if b, jerr := json.Marshal(ErrorBody{Error: err.msg, Code: err.code}); jerr != nil || !json.Valid(b) {
				t.Fatalf("error body does not render: %v", jerr)
			}
			return
		}
		checkSubmission(t, g, sub, route, ids, contentType, body)
	})
}

// checkSubmission fails t unless sub, accepted from the input, is within
// every limit and survives the request record's round trip.
func checkSubmission(t *testing.T, g *Gateway, sub submission, route, ids, contentType string, body []byte) {
	t.Helper()
	rt, ok := g.routes[schemas.Route(route)]
	if !ok || sub.route.Name != rt.Name {
		t.Fatalf("accepted route %q as %q", route, sub.route.Name)
	}
	if sub.timeout <= 0 || sub.timeout > rt.MaxTimeout || sub.timeout%time.Millisecond != 0 {
		t.Fatalf("timeout %s outside (0, %s] or not whole milliseconds", sub.timeout, rt.MaxTimeout)
	}
	if sub.explicit != 0 && sub.explicit != sub.timeout {
		t.Fatalf("explicit timeout %s, timeout %s", sub.explicit, sub.timeout)
	}
	if sub.explicit == 0 && sub.timeout != rt.Timeout {
		t.Fatalf("default timeout %s, route's %s", sub.timeout, rt.Timeout)
	}
	if f := sub.fanout; f != nil && (*f < 1 || *f > rt.MaxFanout || rt.Mode == scatterer.Broadcast && *f != len(rt.Recipients)) {
		t.Fatalf("fanout %d accepted on %s route %s (max %d)", *f, rt.Mode, rt.Name, rt.MaxFanout)
	}
	if sub.wait < 0 || sub.wait > g.cfg.MaxWait {
		t.Fatalf("wait %s outside [0, %s]", sub.wait, g.cfg.MaxWait)
	}
	if !validID.MatchString(string(sub.id)) || (ids != "" && string(sub.id) != ids) {
		t.Fatalf("id %q from header %q", sub.id, ids)
	}
	if mt, _, err := mime.ParseMediaType(contentType); err != nil {
		t.Fatalf("content type %q does not parse: %v", contentType, err)
	} else if isJSON(mt) && !json.Valid(body) {
		t.Fatalf("content type %s on a body that is not JSON", mt)
	}
	now := time.Now()
	req := schemas.Request{CorrelationID: sub.id, Route: rt.Name, Payload: body, ContentType: contentType,
		Timeout: sub.explicit, Fanout: sub.fanout, SubmittedAt: now}
	b, err := schemas.EncodeRequest(req)
	if err != nil {
		t.Fatalf("accepted request does not encode: %v", err)
	}
	got, err := schemas.DecodeRequest(b)
	if err != nil {
		t.Fatalf("accepted request does not decode: %v", err)
	}
	if got.CorrelationID != req.CorrelationID || got.Route != req.Route || !bytes.Equal(got.Payload, req.Payload) ||
		got.ContentType != req.ContentType || got.Timeout != req.Timeout ||
		(got.Fanout == nil) != (req.Fanout == nil) || (got.Fanout != nil && *got.Fanout != *req.Fanout) {
		t.Fatalf("request record round trip:\n got %+v\nwant %+v", got, req)
	}
}
