// The OpenAPI tests stay out of the fuzz build (make fuzz sets sg_fuzz):
// a fuzz binary instruments every package the test binary links, and
// libopenapi's made the gateway's fuzz build take 209s in CI (all of make fuzz
// had taken 111s before).

//go:build !sg_fuzz

package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/gateway"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// apiSpec is the gateway's OpenAPI document, parsed, with a validator in
// strict mode: a request or response property, query parameter or header
// the document does not declare is an error, and so is a status it does
// not list for the operation.
type apiSpec struct {
	raw   []byte
	model *v3.Document
	valid validator.Validator
	// events maps an event name of the event stream to its data's schema
	// (x-scattergather-events).
	events map[string]*base.Schema
}

func loadSpec(t *testing.T) *apiSpec {
	t.Helper()
	raw := gateway.OpenAPIDocument()
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("openapi.json: build the model: %v", err)
	}
	if m.Model.Version != "3.1.0" {
		t.Errorf("openapi.json is OpenAPI %s, want 3.1.0", m.Model.Version)
	}
	v, errs := validator.NewValidator(doc, config.WithStrictMode(),
		// Bodies are held by their schemas (additionalProperties: false);
		// payloads are any JSON, which strict mode would refuse.
		config.WithStrictIgnorePaths("$.body.**"))
	if len(errs) > 0 {
		t.Fatalf("openapi.json: validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.json is not a valid OpenAPI document: %s: %s", e.Message, e.Reason)
		}
		t.FailNow()
	}
	s := &apiSpec{raw: raw, model: &m.Model, valid: v, events: map[string]*base.Schema{}}

	// The event schemas, from the extension of the stream's media type.
	var paths struct {
		Paths map[string]map[string]json.RawMessage
	}
	var stream struct {
		Responses map[string]struct {
			Content map[string]struct {
				Events map[string]string `json:"x-scattergather-events"`
			}
		}
	}
	if err := json.Unmarshal(raw, &paths); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(paths.Paths["/v1/requests/{id}/events"]["get"], &stream); err != nil {
		t.Fatalf("openapi.json: GET /v1/requests/{id}/events: %v", err)
	}
	for name, ref := range stream.Responses["200"].Content["text/event-stream"].Events {
		s.events[name] = s.schema(t, ref)
	}
	if len(s.events) == 0 {
		t.Fatal("openapi.json: the event stream lists no events (x-scattergather-events)")
	}
	return s
}

// schema returns the component schema ref (#/components/schemas/NAME).
func (s *apiSpec) schema(t *testing.T, ref string) *base.Schema {
	t.Helper()
	p, ok := s.model.Components.Schemas.Get(strings.TrimPrefix(ref, "#/components/schemas/"))
	if !ok || !strings.HasPrefix(ref, "#/components/schemas/") {
		t.Fatalf("openapi.json: no schema %s", ref)
	}
	return p.Schema()
}

// operations returns "METHOD /path" for every operation of the document.
func (s *apiSpec) operations() []string {
	var ops []string
	for path, item := range s.model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	return ops
}

// match returns the path template of the document that path matches.
func (s *apiSpec) match(path string) (string, *v3.PathItem, bool) {
	segs := strings.Split(path, "/")
	for tmpl, item := range s.model.Paths.PathItems.FromOldest() {
		ts := strings.Split(tmpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		ok := true
		for i := range ts {
			if !(strings.HasPrefix(ts[i], "{") && segs[i] != "") && ts[i] != segs[i] {
				ok = false
				break
			}
		}
		if ok {
			return tmpl, item, true
		}
	}
	return "", nil, false
}

// errorCodes returns the enum of the error code of a response's JSON
// body (an allOf of Error and a code enum), nil when it is not an error.
func errorCodes(content *v3.MediaType) []string {
	if content == nil || content.Schema == nil {
		return nil
	}
	return schemaCodes(content.Schema.Schema())
}

// schemaCodes returns the code enum of an error schema.
func schemaCodes(s *base.Schema) []string {
	var codes []string
	for _, part := range s.AllOf {
		sc := part.Schema()
		if sc.Properties == nil {
			continue
		}
		if code, ok := sc.Properties.Get("code"); ok {
			for _, n := range code.Schema().Enum {
				codes = append(codes, n.Value)
			}
		}
	}
	return codes
}

// outcomes returns every answer the document promises, one key each:
// "METHOD /path STATUS [code]" for the operations, "#Name STATUS [code]"
// for the answers outside them (components.responses UnknownPath and
// MethodNotAllowed).
func (s *apiSpec) outcomes(t *testing.T) []string {
	t.Helper()
	var out []string
	add := func(prefix, status string, r *v3.Response) {
		var mt *v3.MediaType
		if r.Content != nil {
			mt, _ = r.Content.Get("application/json")
		}
		codes := errorCodes(mt)
		if len(codes) == 0 {
			out = append(out, prefix+" "+status)
		}
		for _, c := range codes {
			out = append(out, prefix+" "+status+" "+c)
		}
	}
	for path, item := range s.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			if op.Responses.Default != nil {
				t.Errorf("%s %s has a default response: the document must list each status", method, path)
			}
			for status, r := range op.Responses.Codes.FromOldest() {
				add(strings.ToUpper(method)+" "+path, status, r)
			}
		}
	}
	for name, status := range map[string]string{"UnknownPath": "404", "MethodNotAllowed": "405"} {
		r, ok := s.model.Components.Responses.Get(name)
		if !ok {
			t.Fatalf("openapi.json: no components.responses.%s", name)
		}
		add("#"+name, status, r)
	}
	slices.Sort(out)
	return out
}

// parameters returns "METHOD /path in:name" for every query and header
// parameter of the document.
func (s *apiSpec) parameters() []string {
	var out []string
	for path, item := range s.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			for _, p := range slices.Concat(item.Parameters, op.Parameters) {
				if p.In == "query" || p.In == "header" {
					out = append(out, strings.ToUpper(method)+" "+path+" "+p.In+":"+p.Name)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIOperations: the document has exactly the operations the mux
// serves (the endpoints table) and their query parameters, the mux routes each of them to its
// handler and every other method on their paths to the 405 answer, and
// GET /v1/openapi.json serves the document.
func TestOpenAPIOperations(t *testing.T) {
	spec := loadSpec(t)
	var served, servedQuery []string
	for _, e := range gateway.Endpoints() {
		served = append(served, e.Op)
		for _, q := range e.Query {
			servedQuery = append(servedQuery, e.Op+" query:"+q)
		}
	}
	documented := spec.operations()
	for _, op := range served {
		if !slices.Contains(documented, op) {
			t.Errorf("the gateway serves %s; openapi.json does not document it", op)
		}
	}
	for _, op := range documented {
		if !slices.Contains(served, op) {
			t.Errorf("openapi.json documents %s; the gateway does not serve it", op)
		}
	}
	var documentedQuery []string
	for _, p := range spec.parameters() {
		if strings.Contains(p, " query:") {
			documentedQuery = append(documentedQuery, p)
		}
	}
	for _, q := range servedQuery {
		if !slices.Contains(documentedQuery, q) {
			t.Errorf("the gateway takes %s; openapi.json does not declare it", q)
		}
	}
	for _, q := range documentedQuery {
		if !slices.Contains(servedQuery, q) {
			t.Errorf("openapi.json declares %s; the gateway does not take it", q)
		}
	}

	table, err := routes.Parse([]byte(testRoutes))
	if err != nil {
		t.Fatal(err)
	}
	srs, err := table.ScattererRoutes()
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}, Routes: srs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range spec.model.Paths.PathItems.FromOldest() {
		concrete := strings.NewReplacer("{route}", "echo", "{id}", "some-id").Replace(path)
		ops := item.GetOperations()
		for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
			want := path // the 405 answer
			if _, ok := ops.Get(strings.ToLower(method)); ok {
				want = method + " " + path
			}
			if got := g.Pattern(httptestRequest(t, method, concrete)); got != want {
				t.Errorf("%s %s is served by the mux's %q, want %q", method, concrete, got, want)
			}
		}
	}
	for _, path := range []string{"/v1/nothing", "/v1/routes/echo/requests/x", "/v2/routes"} {
		if _, _, ok := spec.match(path); ok {
			t.Errorf("openapi.json matches %s", path)
		}
		if got := g.Pattern(httptestRequest(t, "GET", path)); got != "/v1/" && got != "/" {
			t.Errorf("GET %s is served by the mux's %q, want the 404 answer", path, got)
		}
	}
}

func httptestRequest(t *testing.T, method, path string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://gateway"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// recorder validates exchanges with the gateway against the document and
// records what they covered.
type recorder struct {
	spec *apiSpec
	sv   schema_validation.SchemaValidator

	mu       sync.Mutex
	outcomes map[string]bool // "METHOD /path STATUS [code]", as apiSpec.outcomes
	params   map[string]bool // "METHOD /path in:name" of requests answered 2xx
	events   map[string]bool // "name [code]" of stream events
}

// call is one request to the gateway and what it must get.
type call struct {
	name               string // for the reader
	method, path, body string
	header             map[string]string
	status             int
	code               string // the error code; "" for an answer that is not an error
	// refused: the document itself refuses the request (a pattern, a
	// type, an undeclared parameter), not only the gateway.
	refused bool
}

// do sends c to base, checks its status and code, and checks the exchange.
func (rc *recorder) do(t *testing.T, base string, c call) exchange {
	t.Helper()
	method := c.method
	if method == "" {
		method = "POST"
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, c.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, c.path, err)
	}
	x := exchange{method: method, url: base + c.path, reqHeader: req.Header, reqBody: []byte(c.body), res: res, body: b}
	rc.check(t, x, c)
	return x
}

// exchange is a request and the answer it got, body read.
type exchange struct {
	method, url string
	reqHeader   http.Header
	reqBody     []byte
	res         *http.Response
	body        []byte
}

func (x exchange) request(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequest(x.method, x.url, bytes.NewReader(x.reqBody))
	if err != nil {
		t.Fatal(err)
	}
	r.Header = x.reqHeader.Clone()
	return r
}

func (x exchange) response() *http.Response {
	r := *x.res
	r.Body = io.NopCloser(bytes.NewReader(x.body))
	return &r
}

// check validates x against the document and what c expects of it.
func (rc *recorder) check(t *testing.T, x exchange, c call) {
	t.Helper()
	req := x.request(t)
	if x.res.StatusCode != c.status {
		t.Errorf("%s %s: status %d, want %d: %s", x.method, x.url, x.res.StatusCode, c.status, x.body)
	}
	var eb gateway.ErrorBody
	if x.res.StatusCode >= 400 {
		json.Unmarshal(x.body, &eb) // the document's schema judges the body
	}
	if eb.Code != c.code {
		t.Errorf("%s %s: body %s, want code %q", x.method, x.url, x.body, c.code)
	}
	key := ""
	tmpl, item, ok := rc.spec.match(req.URL.Path)
	var op *v3.Operation
	if ok {
		op, _ = item.GetOperations().Get(strings.ToLower(x.method))
	}
	switch {
	case op != nil:
		key = x.method + " " + tmpl
		okReq, errs := rc.spec.valid.ValidateHttpRequest(req)
		switch {
		case okReq && c.refused:
			t.Errorf("%s %s %v: the document takes the request; the case says it refuses it", x.method, x.url, x.reqHeader)
		case !okReq && !c.refused:
			t.Errorf("%s %s: the document refuses the request: %s", x.method, x.url, describe(errs))
		}
		if okRes, errs := rc.spec.valid.ValidateHttpResponse(req, x.response()); !okRes {
			t.Errorf("%s %s: answer %d %s does not conform: %s", x.method, x.url, x.res.StatusCode, x.body, describe(errs))
		}
		if r, ok := op.Responses.Codes.Get(strconv.Itoa(x.res.StatusCode)); ok {
			rc.headers(t, x, r)
		}
		if x.res.StatusCode/100 == 2 {
			rc.mu.Lock()
			for name := range req.URL.Query() {
				rc.params[key+" query:"+name] = true
			}
			for _, p := range slices.Concat(item.Parameters, op.Parameters) {
				if p.In == "header" && req.Header.Get(p.Name) != "" {
					rc.params[key+" header:"+p.Name] = true
				}
			}
			rc.mu.Unlock()
		}
		if x.res.StatusCode == http.StatusOK && x.res.Header.Get("Content-Type") == "text/event-stream" {
			rc.checkEvents(t, x)
		}
	case x.res.StatusCode == http.StatusUnauthorized && strings.HasPrefix(req.URL.Path, "/v1/"):
		// Outside the operations, a missing token is checked first.
		rc.component(t, x, "Unauthorized")
	case ok:
		key = "#MethodNotAllowed"
		rc.component(t, x, "MethodNotAllowed")
	default:
		key = "#UnknownPath"
		rc.component(t, x, "UnknownPath")
	}
	if key != "" {
		key += " " + fmt.Sprint(x.res.StatusCode)
		if x.res.StatusCode >= 400 {
			key += " " + eb.Code
		}
		rc.mu.Lock()
		rc.outcomes[key] = true
		rc.mu.Unlock()
	}
}

// component checks an answer outside the operations against
// components.responses.name: its required headers and its JSON body.
func (rc *recorder) component(t *testing.T, x exchange, name string) {
	t.Helper()
	// The status of each, as the document's description says.
	if want := map[string]int{"Unauthorized": 401, "UnknownPath": 404, "MethodNotAllowed": 405}[name]; x.res.StatusCode != want {
		t.Errorf("%s %s: answer %d, want %d (components.responses.%s)", x.method, x.url, x.res.StatusCode, want, name)
	}
	r, ok := rc.spec.model.Components.Responses.Get(name)
	if !ok {
		t.Fatalf("openapi.json: no components.responses.%s", name)
	}
	rc.headers(t, x, r)
	mt, ok := r.Content.Get(x.res.Header.Get("Content-Type"))
	if !ok {
		t.Errorf("%s %s: answer %d has Content-Type %q; components.responses.%s has none such", x.method, x.url, x.res.StatusCode, x.res.Header.Get("Content-Type"), name)
		return
	}
	if ok, errs := rc.sv.ValidateSchemaBytes(mt.Schema.Schema(), x.body); !ok {
		t.Errorf("%s %s: answer %d %s does not conform to components.responses.%s: %s", x.method, x.url, x.res.StatusCode, x.body, name, describe(errs))
	}
}

// headers checks that x's answer has the headers r requires and no
// others but those net/http adds. The validator's strict mode checks the
// latter only for a response that declares headers
// (TestOpenAPIValidatorHeaders).
func (rc *recorder) headers(t *testing.T, x exchange, r *v3.Response) {
	t.Helper()
	declared := map[string]bool{"Content-Type": true, "Content-Length": true, "Date": true}
	if r.Headers != nil {
		for h, hd := range r.Headers.FromOldest() {
			declared[http.CanonicalHeaderKey(h)] = true
			if hd.Required && x.res.Header.Get(h) == "" {
				t.Errorf("%s %s: answer %d lacks %s", x.method, x.url, x.res.StatusCode, h)
			}
		}
	}
	for h := range x.res.Header {
		if !declared[h] {
			t.Errorf("%s %s: answer %d has header %s, which openapi.json does not declare", x.method, x.url, x.res.StatusCode, h)
		}
	}
}

// TestOpenAPIValidatorHeaders reproduces the behaviour of
// libopenapi-validator that recorder.headers works around: in strict mode
// it reports an undeclared header only on a response that declares some.
// When this fails, the validator checks them all: drop the workaround.
func TestOpenAPIValidatorHeaders(t *testing.T) {
	spec := loadSpec(t)
	req := httptestRequest(t, "GET", "/v1/routes")
	res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}, "X-Undeclared": {"1"}},
		Body: io.NopCloser(strings.NewReader(`{"routes":[]}`))}
	if ok, errs := spec.valid.ValidateHttpResponse(req, res); !ok {
		t.Errorf("the validator now reports undeclared headers of a response that declares none: %s", describe(errs))
	}
}

// checkEvents checks each event of a stream against its schema.
func (rc *recorder) checkEvents(t *testing.T, x exchange) {
	t.Helper()
	var name string
	sc := bufio.NewScanner(bytes.NewReader(x.body))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "", strings.HasPrefix(line, ": "), strings.HasPrefix(line, "id: "):
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			schema, ok := rc.spec.events[name]
			if !ok {
				t.Errorf("%s: event %q is not in the document", x.url, name)
				continue
			}
			if ok, errs := rc.sv.ValidateSchemaBytes(schema, data); !ok {
				t.Errorf("%s: event %s %s does not conform: %s", x.url, name, data, describe(errs))
			}
			key := name
			if name == gateway.EventError {
				var eb gateway.ErrorBody
				json.Unmarshal(data, &eb)
				key += " " + eb.Code
			}
			rc.mu.Lock()
			rc.events[key] = true
			rc.mu.Unlock()
		default:
			t.Errorf("%s: line %q is not an SSE field", x.url, line)
		}
	}
}

func describe[E interface{ Error() string }](errs []E) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("\n\t" + e.Error())
	}
	return b.String()
}

// TestOpenAPIConformance drives every answer the handlers give, through
// running gateways on the test's broker and pipeline, and checks each
// request and answer against openapi.json with libopenapi-validator in
// strict mode: every status, header, parameter and body the gateway
// produces is in the document. Then, the other way, every status and
// error code the document lists was produced by a case, every query and
// header parameter it declares was taken in a 2xx, and every event it
// names was sent: the document promises nothing more.
func TestOpenAPIConformance(t *testing.T) {
	spec := loadSpec(t)
	rc := &recorder{spec: spec, sv: schema_validation.NewSchemaValidator(),
		outcomes: map[string]bool{}, params: map[string]bool{}, events: map[string]bool{}}

	e := newEnv(t)
	e.startPipeline(t)
	s := e.startGateway(t, func(c *gateway.Config) { c.MaxBodyBytes = 1024; c.MaxWait = 30 * time.Second; c.MaxStreams = 1 })
	s.waitReady(t)
	run := func(t *testing.T, base string, calls ...call) {
		t.Helper()
		for _, c := range calls {
			rc.do(t, base, c)
		}
	}

	t.Run("answers", func(t *testing.T) {
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		jsonCT := map[string]string{"Content-Type": "application/json"}
		run(t, s.url,
			call{name: "routes", method: "GET", path: "/v1/routes", status: 200},
			call{name: "route", method: "GET", path: "/v1/routes/quotes", status: 200},
			call{name: "sync", path: "/v1/routes/echo/requests?wait=20s&fanout=3&timeout=5s", body: `{"q":"red shoes"}`, status: 200,
				header: map[string]string{"Content-Type": "application/json", gateway.HeaderCorrelationID: "openapi-sync-1", "traceparent": tp}},
			call{name: "sync raw bytes", path: "/v1/routes/echo/requests?wait=20s", body: "plain text", status: 200, header: map[string]string{"Content-Type": "text/plain"}},
			// quotes: "stuck" holds it, so that the reply cannot be in before the
			// answer (a 200).
			call{name: "async, no body", path: "/v1/routes/quotes/requests", status: 202},
		)
		doc := rc.do(t, s.url, call{name: "document", method: "GET", path: "/v1/openapi.json", status: 200})
		if !bytes.Equal(doc.body, spec.raw) || doc.res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET /v1/openapi.json: %s, %d bytes; want application/json, the %d bytes of openapi.json",
				doc.res.Header.Get("Content-Type"), len(doc.body), len(spec.raw))
		}
		pending := rc.do(t, s.url, call{path: "/v1/routes/quotes/requests?timeout=3s", body: `{"amount":5}`, header: jsonCT, status: 202})
		loc := pending.res.Header.Get("Location")
		run(t, s.url,
			call{name: "pending", method: "GET", path: loc, status: 202},
			call{name: "events", method: "GET", path: loc + "/events", status: 200},
			call{name: "reply", method: "GET", path: loc + "?wait=20s", status: 200},
		)
		dup := pending.res.Header.Get(gateway.HeaderCorrelationID)

		// The errors of the operations, in the order of the handlers.
		run(t, s.url,
			call{method: "GET", path: "/v1/routes?x=1", status: 400, code: gateway.CodeBadRequest, refused: true},
			call{method: "GET", path: "/v1/routes/quotes?x=1", status: 400, code: gateway.CodeBadRequest, refused: true},
			call{method: "GET", path: "/v1/routes/nope", status: 404, code: gateway.CodeUnknownRoute},
			call{method: "GET", path: "/v1/openapi.json?x=1", status: 400, code: gateway.CodeBadRequest, refused: true},
			call{path: "/v1/routes/nope/requests", status: 404, code: gateway.CodeUnknownRoute},
			call{path: "/v1/routes/echo/requests?timout=2s", status: 400, code: gateway.CodeBadRequest, refused: true},
			call{path: "/v1/routes/echo/requests?timeout=abc", status: 400, code: gateway.CodeInvalidTimeout, refused: true},
			call{path: "/v1/routes/echo/requests?timeout=2m", status: 400, code: gateway.CodeInvalidTimeout},
			call{path: "/v1/routes/echo/requests?fanout=two", status: 400, code: gateway.CodeInvalidFanout, refused: true},
			call{path: "/v1/routes/echo/requests?fanout=9", status: 400, code: gateway.CodeInvalidFanout},
			call{path: "/v1/routes/echo/requests?wait=soon", status: 400, code: gateway.CodeInvalidWait, refused: true},
			call{path: "/v1/routes/echo/requests?wait=1h", status: 400, code: gateway.CodeInvalidWait},
			call{path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{gateway.HeaderCorrelationID: "has space"}, status: 400, code: gateway.CodeInvalidID, refused: true},
			call{path: "/v1/routes/echo/requests", body: strings.Repeat("x", 2000), status: 413, code: gateway.CodeBodyTooLarge},
			call{path: "/v1/routes/echo/requests", body: `{"q":`, header: jsonCT, status: 400, code: gateway.CodeInvalidJSON, refused: true},
			call{path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{"Content-Type": "a/b; =x"}, status: 400, code: gateway.CodeBadRequest},
			call{path: "/v1/routes/echo/requests", body: `{}`, header: map[string]string{gateway.HeaderCorrelationID: dup}, status: 409, code: gateway.CodeDuplicateID},
			call{method: "GET", path: "/v1/requests/nosuchid", status: 404, code: gateway.CodeUnknownRequest},
			call{method: "GET", path: "/v1/requests/nosuchid?timeout=1s", status: 400, code: gateway.CodeBadRequest, refused: true},
			call{method: "GET", path: "/v1/requests/nosuchid?wait=-1s", status: 400, code: gateway.CodeInvalidWait, refused: true},
			call{method: "GET", path: "/v1/requests/nosuchid?wait=1h", status: 400, code: gateway.CodeInvalidWait},
			call{method: "GET", path: "/v1/requests/nosuchid/events", status: 404, code: gateway.CodeUnknownRequest},
			call{method: "GET", path: "/v1/requests/nosuchid/events?wait=5s", status: 400, code: gateway.CodeBadRequest, refused: true},
		)

		// Outside the operations.
		run(t, s.url,
			call{method: "GET", path: "/v2/x", status: 404, code: gateway.CodeNotFound},
			call{method: "GET", path: "/v1/nothing", status: 404, code: gateway.CodeNotFound},
			call{method: "GET", path: "/healthz", status: 404, code: gateway.CodeNotFound},
			call{method: "GET", path: "/v1/routes/echo/requests", status: 405, code: gateway.CodeMethodNotAllowed},
			call{method: "DELETE", path: "/v1/requests/x", status: 405, code: gateway.CodeMethodNotAllowed},
			call{path: "/v1/openapi.json", status: 405, code: gateway.CodeMethodNotAllowed},
		)
	})

	t.Run("too many streams", func(t *testing.T) {
		// MaxStreams is 1: a stream held open refuses the next.
		res := rc.do(t, s.url, call{path: "/v1/routes/quotes/requests?timeout=10s", body: `{}`, status: 202})
		loc := res.res.Header.Get("Location")
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, "GET", s.url+loc+"/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		held, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Body.Close()
		if held.StatusCode != http.StatusOK {
			t.Fatalf("first stream: %d", held.StatusCode)
		}
		rc.do(t, s.url, call{method: "GET", path: loc + "/events", status: 503, code: gateway.CodeTooManyStreams})
		cancel()
	})

	t.Run("shutdown ends a stream", func(t *testing.T) {
		other := e.startGateway(t, nil)
		res := rc.do(t, other.url, call{path: "/v1/routes/quotes/requests?timeout=30s", body: `{}`, status: 202})
		url := other.url + res.res.Header.Get("Location") + "/events"
		req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Body.Close()
		// The stream's first line is its comment: then stop the gateway.
		br := bufio.NewReader(stream.Body)
		first, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if err := other.stop(); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		x := exchange{method: "GET", url: url, reqHeader: req.Header, res: stream, body: append([]byte(first), rest...)}
		rc.check(t, x, call{status: 200})
		if !bytes.Contains(x.body, []byte("event: error")) {
			t.Errorf("stream cut by the shutdown: %s", x.body)
		}
	})

	t.Run("max in flight", func(t *testing.T) {
		limited := e.startGateway(t, func(c *gateway.Config) { c.MaxInFlight = 1; c.RetryAfter = 2 * time.Second })
		run(t, limited.url,
			call{path: "/v1/routes/quotes/requests?timeout=3s", body: `{}`, status: 202},
			call{path: "/v1/routes/echo/requests", body: `{}`, status: 429, code: gateway.CodeTooManyInFlight},
		)
	})

	t.Run("auth", func(t *testing.T) {
		const token = "openapi-test-token-0123456789"
		file := filepath.Join(t.TempDir(), "tokens")
		writeTokens(t, file, token)
		guarded := e.startGateway(t, func(c *gateway.Config) { c.AuthTokenFile = file })
		wrong := bearer("not-a-token-of-this-gateway")
		run(t, guarded.url,
			call{path: "/v1/routes/echo/requests", body: `{}`, status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/routes", header: wrong, status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/routes/echo", status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/requests/x", status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/requests/x/events", status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/openapi.json", status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/secret", status: 401, code: gateway.CodeUnauthorized},
			call{method: "DELETE", path: "/v1/routes", status: 401, code: gateway.CodeUnauthorized},
			call{method: "GET", path: "/v1/routes", header: bearer(token), status: 200},
		)
	})

	t.Run("broker unavailable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		down := &env{cc: kafkaconfig.Client{Brokers: []string{closed}}, topics: kafkaconfig.Topics{Prefix: "sg."}, table: e.table}
		d := down.startGateway(t, func(c *gateway.Config) { c.ProduceTimeout = time.Second })
		run(t, d.url,
			call{path: "/v1/routes/echo/requests?wait=5s", body: `{}`, status: 503, code: gateway.CodeBrokerUnavailable},
			call{method: "GET", path: "/v1/requests/abc", status: 503, code: gateway.CodeBrokerUnavailable},
			call{method: "GET", path: "/v1/requests/abc/events", status: 503, code: gateway.CodeBrokerUnavailable},
		)
	})

	// Outcomes no case produced on this broker, and why.
	var notRun []string
	t.Run("catching up, then no reply", func(t *testing.T) {
		c := newEnv(t) // a broker of its own: its fetches are held
		fake := c.cluster.Fake
		var hold atomic.Bool
		if fake == nil {
			notRun = append(notRun, "GET /v1/requests/{id} 503 catching-up", "GET /v1/requests/{id}/events 503 catching-up")
			t.Log("catching-up is not checked: holding fetches needs the in-process kfake broker")
		} else {
			// A record in the window, so that the gateway has one to read
			// back, and no fetch answered until hold ends.
			if err := c.cluster.Client(t).ProduceSync(t.Context(), &kgo.Record{Topic: c.topics.Requests(), Value: []byte("x")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			hold.Store(true)
			fake.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
				if !hold.Load() {
					return nil, nil, false
				}
				fake.KeepControl()
				return nil, fmt.Errorf("fetch held by the test"), true
			})
		}
		g := c.startGateway(t, func(cfg *gateway.Config) { cfg.ReplyGrace = 200 * time.Millisecond })
		if fake != nil {
			deadline := time.Now().Add(20 * time.Second)
			for err := g.Ready(); err == nil || !strings.Contains(err.Error(), "catching-up"); err = g.Ready() {
				if time.Now().After(deadline) {
					t.Fatalf("not catching up after 20s: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			run(t, g.url,
				call{method: "GET", path: "/v1/requests/abc", status: 503, code: gateway.CodeCatchingUp},
				call{method: "GET", path: "/v1/requests/abc/events", status: 503, code: gateway.CodeCatchingUp},
			)
			hold.Store(false)
		}
		g.waitReady(t)
		// No pipeline: no manifest and no reply; the stream ends with an
		// error event at the deadline plus the grace.
		res := rc.do(t, g.url, call{path: "/v1/routes/echo/requests?timeout=300ms", body: `{}`, status: 202})
		x := rc.do(t, g.url, call{method: "GET", path: res.res.Header.Get("Location") + "/events", status: 200})
		if !bytes.Contains(x.body, []byte(`"code":"no-reply"`)) {
			t.Errorf("stream %s, want a no-reply error", x.body)
		}
	})

	if t.Failed() {
		return // the coverage means something only once every case passed
	}
	t.Run("the document promises nothing more", func(t *testing.T) {
		// No input reaches these: the request record cannot fail to
		// encode, and a stream's reader is built from the config the
		// gateway's own clients were built from.
		unreachable := []string{
			"POST /v1/routes/{route}/requests 500 internal",
			"GET /v1/requests/{id}/events 500 internal",
		}
		for _, o := range spec.outcomes(t) {
			if !rc.outcomes[o] && !slices.Contains(unreachable, o) && !slices.Contains(notRun, o) {
				t.Errorf("openapi.json lists %q; no case produced it", o)
			}
		}
		for _, o := range unreachable {
			if !slices.Contains(spec.outcomes(t), o) {
				t.Errorf("%q is no longer in openapi.json: drop it from unreachable", o)
			}
		}
		for _, p := range spec.parameters() {
			if !rc.params[p] {
				t.Errorf("openapi.json declares %q; no request answered 2xx took it", p)
			}
		}
		for name := range spec.events {
			if name == gateway.EventError {
				continue
			}
			if !rc.events[name] {
				t.Errorf("openapi.json names event %q; no stream sent it", name)
			}
		}
		for _, code := range schemaCodes(spec.events[gateway.EventError]) {
			if !rc.events[gateway.EventError+" "+code] {
				t.Errorf("openapi.json lists error event code %q; no stream sent it", code)
			}
		}
	})
}
