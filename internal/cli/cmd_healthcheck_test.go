package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	ready := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			http.Error(w, "not ready: aggregator: restoring the state of 3 partitions from the changelog", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	run := func() int {
		var out, errOut bytes.Buffer
		return Main(t.Context(), []string{"healthcheck", "--url", srv.URL + "/readyz"}, Commands(), &out, &errOut)
	}
	if code := run(); code != 1 {
		t.Fatalf("not ready: exit %d, want 1", code)
	}
	ready = true
	if code := run(); code != 0 {
		t.Fatalf("ready: exit %d, want 0", code)
	}
	srv.Close()
	if code := run(); code != 1 {
		t.Fatalf("nothing listening: exit %d, want 1", code)
	}
}
