// Package registrytest is an in-process HTTP schema registry for tests: the
// subset of the Confluent Schema Registry API that schemareg's client uses.
//
//	POST /subjects/{subject}/versions           register; {"id": n}
//	GET  /subjects/{subject}/versions           [1, 2, ...]
//	GET  /subjects/{subject}/versions/{version} {"subject","version","id","schema"}
//	GET  /schemas/ids/{id}                      {"schema"}
//
// Ids are global: the same schema text gets the same id in every subject,
// as in the real registry. Errors have the registry's JSON shape
// {"error_code", "message"}.
package registrytest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

// Registry is a running test registry.
type Registry struct {
	// URL is the registry's base URL.
	URL string

	user, pass string

	mu       sync.Mutex
	nextID   int
	ids      map[string]int   // schema text -> id
	texts    map[int]string   // id -> schema text
	subjects map[string][]int // subject -> ids by version-1
	calls    map[string]int   // "METHOD pattern" -> count
	down     bool             // answer every request 503
}

// Option configures a Registry.
type Option func(*Registry)

// BasicAuth makes the registry require HTTP basic auth with user and pass.
func BasicAuth(user, pass string) Option {
	return func(r *Registry) { r.user, r.pass = user, pass }
}

// FirstID sets the first id handed out (default 1).
func FirstID(id int) Option { return func(r *Registry) { r.nextID = id } }

// New starts a registry that stops when the test ends.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r := &Registry{nextID: 1, ids: map[string]int{}, texts: map[int]string{}, subjects: map[string][]int{}, calls: map[string]int{}}
	for _, o := range opts {
		o(r)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /subjects/{subject}/versions", r.register)
	mux.HandleFunc("GET /subjects/{subject}/versions", r.versions)
	mux.HandleFunc("GET /subjects/{subject}/versions/{version}", r.version)
	mux.HandleFunc("GET /schemas/ids/{id}", r.byID)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, pattern := mux.Handler(req)
		r.mu.Lock()
		r.calls[pattern]++
		down := r.down
		r.mu.Unlock()
		if down {
			writeError(w, http.StatusServiceUnavailable, 50003, "Service Unavailable")
			return
		}
		if r.user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
				writeError(w, http.StatusUnauthorized, 401, "Unauthorized")
				return
			}
		}
		if pattern == "" {
			writeError(w, http.StatusNotFound, 404, "HTTP 404 Not Found: "+req.Method+" "+req.URL.Path)
			return
		}
		mux.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// Add registers schema under subject directly, as another producer would,
// and returns its id.
func (r *Registry) Add(subject, schema string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.add(subject, schema)
}

func (r *Registry) add(subject, schema string) int {
	id, ok := r.ids[schema]
	if !ok {
		id = r.nextID
		r.nextID++
		r.ids[schema] = id
		r.texts[id] = schema
	}
	for _, have := range r.subjects[subject] {
		if have == id {
			return id
		}
	}
	r.subjects[subject] = append(r.subjects[subject], id)
	return id
}

// SetDown makes the registry answer every request with HTTP 503 (down) or
// serve again.
func (r *Registry) SetDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// Calls returns how many requests matched pattern, e.g.
// "POST /subjects/{subject}/versions".
func (r *Registry) Calls(pattern string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[pattern]
}

// Subjects returns the subjects and, for each, the ids of its versions.
func (r *Registry) Subjects() map[string][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]int{}
	for s, ids := range r.subjects {
		out[s] = append([]int(nil), ids...)
	}
	return out
}

func (r *Registry) register(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Schema     string `json:"schema"`
		SchemaType string `json:"schemaType"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || body.Schema == "" {
		writeError(w, http.StatusUnprocessableEntity, 42201, "Invalid schema")
		return
	}
	if body.SchemaType != "" && body.SchemaType != "AVRO" {
		writeError(w, http.StatusUnprocessableEntity, 42201, "unsupported schema type "+body.SchemaType)
		return
	}
	r.mu.Lock()
	id := r.add(req.PathValue("subject"), body.Schema)
	r.mu.Unlock()
	writeJSON(w, map[string]int{"id": id})
}

func (r *Registry) versions(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ids, ok := r.subjects[req.PathValue("subject")]
	r.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, 40401, "Subject not found.")
		return
	}
	vs := make([]int, len(ids))
	for i := range ids {
		vs[i] = i + 1
	}
	writeJSON(w, vs)
}

func (r *Registry) version(w http.ResponseWriter, req *http.Request) {
	subject := req.PathValue("subject")
	r.mu.Lock()
	ids, ok := r.subjects[subject]
	r.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, 40401, "Subject not found.")
		return
	}
	v, err := strconv.Atoi(req.PathValue("version"))
	if v == -1 || req.PathValue("version") == "latest" {
		v, err = len(ids), nil
	}
	if err != nil || v < 1 || v > len(ids) {
		writeError(w, http.StatusNotFound, 40402, "Version not found.")
		return
	}
	id := ids[v-1]
	r.mu.Lock()
	text := r.texts[id]
	r.mu.Unlock()
	writeJSON(w, map[string]any{"subject": subject, "version": v, "id": id, "schema": text})
}

func (r *Registry) byID(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.Atoi(req.PathValue("id"))
	r.mu.Lock()
	text, ok := r.texts[id]
	r.mu.Unlock()
	if err != nil || !ok {
		writeError(w, http.StatusNotFound, 40403, "Schema not found")
		return
	}
	writeJSON(w, map[string]string{"schema": text})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
}
