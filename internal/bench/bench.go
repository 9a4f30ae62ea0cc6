// Package bench measures the throughput and latency of the scatter-gather
// pipeline against a raw-Kafka baseline measured in the same run, on the
// same broker, with the same topic settings. It is the engine of
// `scattergather bench`.
//
// A run has up to two phases, one after the other so that they do not
// compete for the machine:
//
//   - pipeline: a client sends requests to the route "bench" (split or
//     broadcast, with the configured fan-out) of a pipeline whose roles
//     run in this process (internal/stack), or of one that runs elsewhere
//     (Config.External: only the client side runs here);
//   - baseline (Config.Baseline): a raw franz-go chain with the same hops
//     and the same records per request: request → fan-out tasks →
//     fan-out results → one reply, each hop a consume-produce loop under
//     the same guarantee (transactions or not), with the same record
//     sizes, keys, partitions, acks and linger, and the same handler.
//
// Each phase gets the same offered load (see [Load]: open loop at a fixed
// rate with latency from each request's intended send time, or closed
// loop), a warmup, and a measured window. Latencies go into an HDR
// histogram; throughput counts the replies that arrived in the window.
//
// Usage:
//
//	rep, err := bench.Run(ctx, bench.Config{
//		Client: kafkaconfig.Client{Brokers: brokers},
//		Fanout: 8, Baseline: true,
//		Load:   bench.Load{Rate: 500, Duration: 10 * time.Second, Warmup: 2 * time.Second},
//	})
//	if err != nil { ... }
//	rep.WriteTable(os.Stdout)
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/scattergather/scattergather/internal/buildinfo"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
)

// Defaults of Config.
const (
	DefaultRoute        = "bench"
	DefaultFanout       = 8
	DefaultPayloadBytes = 100
	DefaultTimeout      = 10 * time.Second
	DefaultReadyTimeout = 60 * time.Second
)

// HandlerSpec names the processors' built-in handler.
type HandlerSpec struct {
	// Name is echo (default: answer with the task's payload) or sleep.
	Name string `json:"name"`
	// Delay is the sleep handler's delay per task; when MaxDelay is above
	// it, the delay is uniform in [Delay, MaxDelay].
	Delay    time.Duration `json:"delay"`
	MaxDelay time.Duration `json:"max_delay"`
}

func (h HandlerSpec) build() (processor.Handler, error) {
	switch h.Name {
	case "echo":
		return processor.Echo(), nil
	case "sleep":
		return processor.Sleep(processor.SleepConfig{Delay: h.Delay, MaxDelay: h.MaxDelay, Seed: time.Now().UnixNano()})
	}
	return nil, fmt.Errorf("handler %q: want echo or sleep", h.Name)
}

func (h HandlerSpec) String() string {
	switch {
	case h.Name != "sleep":
		return h.Name
	case h.MaxDelay > h.Delay:
		return fmt.Sprintf("sleep %s..%s", h.Delay, h.MaxDelay)
	}
	return fmt.Sprintf("sleep %s", h.Delay)
}

// Config configures a bench run.
type Config struct {
	// Client reaches the broker.
	Client kafkaconfig.Client
	// Broker describes the broker for the report, e.g. "embedded (kfake)".
	Broker string
	// Topics: with External, the running pipeline's topics. Otherwise each
	// phase creates its own topics under Topics.Prefix + "bench.<run id>."
	// and deletes them afterwards unless KeepTopics is set.
	Topics     kafkaconfig.Topics
	Layout     kafkaconfig.Layout
	Guarantee  kafkaconfig.Guarantee
	KeepTopics bool
	// External drives a pipeline whose roles already run elsewhere: only
	// the client side runs here. Route must be one those roles serve, and
	// Mode and Fanout must match it (the baseline copies them).
	External bool
	// Route is the route requests go to; default "bench".
	Route string
	// Mode is split (default) or broadcast.
	Mode scatterer.Mode
	// Fanout is the parts per request: the fan-out of a split request, the
	// number of recipients of a broadcast route. Default 8.
	Fanout int
	// PayloadBytes is the size of each request's payload (a JSON string);
	// default 100.
	PayloadBytes int
	// Handler of the processors; default echo.
	Handler HandlerSpec
	// Processors is the number of processor instances per group (per
	// recipient on a broadcast route), in the pipeline and in the baseline's
	// middle hop; default 1.
	Processors int
	// TransactionGap is, under exactly-once, every hop's least time from
	// the end of a transaction to the poll for its next batch, in the
	// pipeline (kafkaconfig.Role.TransactionGap) and in the baseline; 0:
	// kafkaconfig.DefaultTransactionGap, negative: no wait.
	TransactionGap time.Duration
	// Timeout of each request; default 10s.
	Timeout time.Duration
	// ReadyTimeout bounds the wait for each chain to answer its first
	// request before the load starts; default 60s.
	ReadyTimeout time.Duration
	Load         Load
	// Settle, when above 0, sends the load unmeasured before the first
	// phase (the pipeline) until three 2s rounds agree within 10%, for at
	// most Settle: a fresh broker ramps up over 10-15s, which would count
	// against the phase that runs first. 0: no settling.
	Settle time.Duration
	// Baseline also runs the raw-Kafka baseline chain.
	Baseline bool
	// Label names this run in a sweep, e.g. "fanout=16".
	Label string
	// RunID makes topic names unique; default random.
	RunID string
	// Progress receives a status line per second; nil for none. With
	// ProgressTTY the line is rewritten in place.
	Progress    io.Writer
	ProgressTTY bool
	Logger      *slog.Logger
}

// Validate fills in defaults and reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Route == "" {
		c.Route = DefaultRoute
	}
	if err := kafkaconfig.ValidRouteName(c.Route); err != nil {
		errs = append(errs, err)
	}
	if c.Guarantee == "" {
		c.Guarantee = kafkaconfig.ExactlyOnce
	}
	if _, err := kafkaconfig.ParseGuarantee(string(c.Guarantee)); err != nil {
		errs = append(errs, err)
	}
	if !c.External {
		if err := c.Layout.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Mode == "" {
		c.Mode = scatterer.Split
	}
	if c.Mode != scatterer.Split && c.Mode != scatterer.Broadcast {
		errs = append(errs, fmt.Errorf("mode %q: want split or broadcast", c.Mode))
	}
	if c.Fanout == 0 {
		c.Fanout = DefaultFanout
	}
	if c.Fanout < 1 || c.Fanout > scatterer.DefaultMaxFanout {
		errs = append(errs, fmt.Errorf("fanout: %d, want 1..%d", c.Fanout, scatterer.DefaultMaxFanout))
	}
	if c.PayloadBytes == 0 {
		c.PayloadBytes = DefaultPayloadBytes
	}
	if c.PayloadBytes < 0 || c.PayloadBytes > scatterer.DefaultMaxPayloadBytes {
		errs = append(errs, fmt.Errorf("payload bytes: %d, want 0..%d", c.PayloadBytes, scatterer.DefaultMaxPayloadBytes))
	}
	if c.Handler.Name == "" {
		c.Handler.Name = "echo"
	}
	if _, err := c.Handler.build(); err != nil {
		errs = append(errs, err)
	}
	if c.Processors == 0 {
		c.Processors = 1
	}
	if c.Processors < 1 {
		errs = append(errs, fmt.Errorf("processors: %d, want at least 1", c.Processors))
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative", c.Timeout))
	}
	if c.Settle < 0 {
		errs = append(errs, fmt.Errorf("settle: %s is negative", c.Settle))
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if err := c.Load.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.RunID = hex.EncodeToString(b[:])
	}
	if c.Broker == "" {
		c.Broker = strings.Join(c.Client.Brokers, ",")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// payload returns the request payload: a JSON string of PayloadBytes bytes,
// so that the aggregator's collect merge embeds it as it is.
func (c *Config) payload() []byte {
	switch n := c.PayloadBytes; {
	case n == 0:
		return nil
	case n == 1:
		return []byte("0")
	default:
		return []byte(`"` + strings.Repeat("x", n-2) + `"`)
	}
}

// Settings are the run's settings, as the report states them.
type Settings struct {
	Label            string      `json:"label,omitempty"`
	Broker           string      `json:"broker"`
	External         bool        `json:"external"`
	Route            string      `json:"route"`
	Mode             string      `json:"mode"`
	Fanout           int         `json:"fanout"`
	PayloadBytes     int         `json:"payload_bytes"`
	Handler          HandlerSpec `json:"handler"`
	Processors       int         `json:"processors"`
	Partitions       int32       `json:"partitions"`
	ResultPartitions int32       `json:"result_partitions"`
	Replication      int16       `json:"replication_factor"`
	Guarantee        string      `json:"guarantee"`
	// TransactionGapMS is Config.TransactionGap, under exactly-once only.
	TransactionGapMS float64 `json:"transaction_gap_ms,omitempty"`
	Load             string  `json:"load"`
	Rate             float64 `json:"rate,omitempty"`
	Concurrency      int     `json:"concurrency,omitempty"`
	DurationS        float64 `json:"duration_s,omitempty"`
	Requests         int     `json:"requests,omitempty"`
	WarmupS          float64 `json:"warmup_s"`
	TimeoutS         float64 `json:"timeout_s"`
	// BaselineSizes are the value sizes the baseline wrote per record kind.
	BaselineSizes *recordSizes `json:"baseline_record_sizes,omitempty"`
}

func (c *Config) settings() Settings {
	s := Settings{
		Label: c.Label, Broker: c.Broker, External: c.External, Route: c.Route, Mode: string(c.Mode), Fanout: c.Fanout,
		PayloadBytes: c.PayloadBytes, Handler: c.Handler, Processors: c.Processors,
		Partitions: c.Layout.Partitions, ResultPartitions: c.Layout.ResultPartitions, Replication: c.Layout.ReplicationFactor,
		Guarantee: string(c.Guarantee), Load: c.Load.Describe(), Rate: c.Load.Rate, Concurrency: c.Load.Concurrency,
		DurationS: c.Load.Duration.Seconds(), Requests: c.Load.Requests, WarmupS: c.Load.Warmup.Seconds(), TimeoutS: c.Timeout.Seconds(),
	}
	if c.Guarantee == kafkaconfig.ExactlyOnce {
		s.TransactionGapMS = float64(max(c.transactionGap(), 0).Microseconds()) / 1000
	}
	return s
}

// transactionGap is the gap every exactly-once hop waits: TransactionGap
// with its default.
func (c *Config) transactionGap() time.Duration {
	if c.TransactionGap == 0 {
		return kafkaconfig.DefaultTransactionGap
	}
	return c.TransactionGap
}

// Env is where the run ran.
type Env struct {
	StartedAt time.Time `json:"started_at"`
	GoVersion string    `json:"go_version"`
	OS        string    `json:"os"`
	Arch      string    `json:"arch"`
	CPUs      int       `json:"cpus"`
	// Commit is the commit the binary was built from (buildinfo.Short:
	// 12 characters, "+dirty" for uncommitted changes; "unknown" when
	// the build stamped none).
	Commit string `json:"commit"`
	// LoadAvg is the machine's 1, 5 and 15 minute load averages when the
	// run started (Linux only): other work on the machine skews figures.
	LoadAvg string `json:"load_avg,omitempty"`
}

func environment() Env {
	e := Env{StartedAt: time.Now().UTC(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Commit: buildinfo.Read().Short()}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			e.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return e
}

// Report is the outcome of a run. The pipeline's figures are at the top
// level; the baseline's, when run, under Baseline.
type Report struct {
	Phase
	Baseline *Phase `json:"baseline,omitempty"`
	// RatioTasksPerS is pipeline tasks/s over baseline tasks/s, and
	// RatioP99 pipeline p99 over baseline p99; zero without a baseline.
	RatioTasksPerS float64  `json:"ratio_tasks_per_s,omitempty"`
	RatioP99       float64  `json:"ratio_p99,omitempty"`
	Settings       Settings `json:"settings"`
	Env            Env      `json:"environment"`
}

// Run runs the pipeline phase and, if configured, the baseline phase, and
// returns what they measured. It returns ctx's error when interrupted.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench config: %w", err)
	}
	rep := &Report{Settings: cfg.settings(), Env: environment()}
	handler, err := cfg.Handler.build()
	if err != nil {
		return nil, err
	}
	base := cfg.Topics.Prefix + "bench." + cfg.RunID + "."
	if cfg.Label != "" {
		base += sanitize(cfg.Label) + "."
	}

	ptopics := cfg.Topics
	if !cfg.External {
		ptopics = kafkaconfig.Topics{Prefix: base + "pipeline."}
	}
	p, err := startPipeline(ctx, &cfg, ptopics, handler)
	if err != nil {
		return nil, err
	}
	phase, runErr := p.measure(ctx, &cfg)
	sizes, haveSizes := p.counter.measuredSizes()
	closeErr := p.close(ctx, &cfg)
	if err := errors.Join(runErr, closeErr); err != nil {
		return nil, err
	}
	rep.Phase = *phase

	if !cfg.Baseline {
		return rep, nil
	}
	if !haveSizes || cfg.External {
		if sizes, err = estimateSizes(&cfg, cfg.payload()); err != nil {
			return nil, fmt.Errorf("baseline record sizes: %w", err)
		}
	}
	rep.Settings.BaselineSizes = &sizes
	ch, err := startChain(ctx, &cfg, kafkaconfig.Topics{Prefix: base + "baseline."}, sizes, handler)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	bphase, runErr := ch.measure(ctx, &cfg)
	closeErr = ch.close(ctx, &cfg)
	if err := errors.Join(runErr, closeErr); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	rep.Baseline = bphase
	if bphase.TasksPerS > 0 {
		rep.RatioTasksPerS = rep.TasksPerS / bphase.TasksPerS
	}
	if bphase.P99 > 0 {
		rep.RatioP99 = rep.P99 / bphase.P99
	}
	return rep, nil
}

// sanitize makes s usable in a topic name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
