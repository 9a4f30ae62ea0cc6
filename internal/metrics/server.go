package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition of a process, e.g. "the scatterer has
// joined its group". Ready returns nil when it holds, else why not.
type Check struct {
	Name  string
	Ready func() error
}

// ServerConfig configures a [Server].
type ServerConfig struct {
	// Addr is the host:port to listen on; port 0 picks a free port.
	Addr string
	// Gatherer is served on /metrics; required.
	Gatherer prometheus.Gatherer
	// Registerer, when set, gets scattergather_ready{check}, 1 while the
	// named check passes.
	Registerer prometheus.Registerer
	// Checks must all pass for /readyz to answer 200.
	Checks []Check
	// Logger; nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c *ServerConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("addr: empty"))
	}
	if c.Gatherer == nil {
		errs = append(errs, errors.New("gatherer: nil"))
	}
	for i, ch := range c.Checks {
		if ch.Name == "" || ch.Ready == nil {
			errs = append(errs, fmt.Errorf("check %d: needs a name and a Ready func", i))
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// Server serves, on one address:
//
//	/metrics  the registry in the Prometheus text format (or OpenMetrics when asked)
//	/healthz  200 "ok" while the process runs
//	/readyz   200 when every check passes, else 503 naming the checks that fail
//
// NewServer binds the address, so a taken port fails at start; Run serves
// until its context ends.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
	srv *http.Server
}

// NewServer validates cfg and listens on cfg.Addr.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("metrics server config: %w", err)
	}
	if cfg.Registerer != nil && len(cfg.Checks) > 0 {
		for _, ch := range cfg.Checks {
			g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "ready",
				Help: "1 while the named readiness check passes, else 0.", ConstLabels: prometheus.Labels{"check": ch.Name}},
				func() float64 {
					if ch.Ready() == nil {
						return 1
					}
					return 0
				})
			if err := cfg.Registerer.Register(g); err != nil {
				return nil, fmt.Errorf("metrics server: check %s: %w", ch.Name, err)
			}
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: listen on %s: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "scattergather: /metrics /healthz /readyz")
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx is done, then shuts the server down, giving requests
// in flight a second. It returns nil after a shutdown.
func (s *Server) Run(ctx context.Context) error {
	s.cfg.Logger.Info("metrics server listening", "addr", s.Addr(), "paths", "/metrics /healthz /readyz")
	errc := make(chan error, 1)
	// Exits when Shutdown closes the listener, or on a serve error.
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics server shutdown: %w", err)
	}
	return nil
}

// Close releases the listener of a server that will not Run.
func (s *Server) Close() error { return s.ln.Close() }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var failing []string
	for _, ch := range s.cfg.Checks {
		if err := ch.Ready(); err != nil {
			failing = append(failing, ch.Name+": "+err.Error())
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready\n%s\n", strings.Join(failing, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}
