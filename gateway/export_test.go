package gateway

import "net/http"

// Endpoints returns the method and path of every operation the mux
// serves, for the OpenAPI tests of package gateway_test.
func Endpoints() [][2]string {
	var out [][2]string
	for _, e := range endpoints() {
		out = append(out, [2]string{e.method, e.path})
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
