package gateway

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3.1 document of the API, served at
// GET /v1/openapi.json. TestOpenAPIOperations and TestOpenAPIConformance
// hold it to what the handlers do, both ways: every operation, parameter,
// status and error code the handlers produce is in it, and nothing else.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPI is GET /v1/openapi.json.
func (g *Gateway) openAPI(w http.ResponseWriter, r *http.Request) {
	if _, perr := parseQuery(r.URL.RawQuery, nil); perr != nil {
		perr.write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(openAPIDocument)
}
