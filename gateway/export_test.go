// The OpenAPI tests stay out of the fuzz build (make fuzz sets sg_fuzz):
// a fuzz binary instruments every package the test binary links, and
// libopenapi's made the gateway's fuzz build take 209s in CI (all of make fuzz
// had taken 111s before).

//go:build !sg_fuzz

package gateway

import "net/http"

// Endpoint is an operation the mux serves: "METHOD /path" and its query
// parameters.
type Endpoint struct {
	Op    string
	Query []string
}

// Endpoints returns every operation the mux serves, for the OpenAPI tests
// of package gateway_test.
func Endpoints() []Endpoint {
	var out []Endpoint
	for _, e := range endpoints() {
		out = append(out, Endpoint{Op: e.method + " " + e.path, Query: e.query})
	}
	return out
}

// OpenAPIDocument returns the embedded OpenAPI document.
func OpenAPIDocument() []byte { return openAPIDocument }

// Pattern returns the pattern of the mux that serves r.
func (g *Gateway) Pattern(r *http.Request) string {
	_, p := g.mux.Handler(r)
	return p
}
