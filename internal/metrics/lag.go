package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

// DefaultLagInterval is how often a [LagSampler] samples by default.
const DefaultLagInterval = 5 * time.Second

// LagConfig configures a [LagSampler].
type LagConfig struct {
	// Client reaches the cluster; the sampler builds its own client.
	Client kafkaconfig.Client
	// Groups whose lag to sample; required.
	Groups []string
	// Interval between samples; default 5s.
	Interval time.Duration
	// Registerer gets scattergather_consumer_lag{group,topic,partition} and
	// scattergather_consumer_lag_sample_errors_total{group}; required.
	Registerer prometheus.Registerer
	// Logger; nil discards.
	Logger *slog.Logger
}

// Validate fills in defaults and reports every problem with c at once.
func (c *LagConfig) Validate() error {
	var errs []error
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	if len(c.Groups) == 0 {
		errs = append(errs, errors.New("groups: none"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: %s is negative", c.Interval))
	} else if c.Interval == 0 {
		c.Interval = DefaultLagInterval
	}
	if c.Registerer == nil {
		errs = append(errs, errors.New("registerer: nil"))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

// LagSampler samples the lag of consumer groups with kadm: per partition of
// each consumed topic, the end offset minus the group's committed offset.
// Under exactly-once an idle partition shows a lag of 1: the marker that
// ends the last transaction takes an offset and is never consumed. Several
// processes of one group sample the same lag: aggregate it with max, not
// sum.
type LagSampler struct {
	cfg    LagConfig
	lag    *prometheus.GaugeVec
	errors *prometheus.CounterVec
}

// NewLagSampler validates cfg and registers the sampler's metrics.
func NewLagSampler(cfg LagConfig) (*LagSampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lag sampler config: %w", err)
	}
	cfg.Groups = slices.Clone(cfg.Groups)
	lag, err := NewGaugeVec(cfg.Registerer, "consumer_lag",
		"Records between a consumer group's committed offset and the partition's end offset, sampled.",
		"group", "topic", "partition")
	if err != nil {
		return nil, err
	}
	errs, err := NewCounterVec(cfg.Registerer, "consumer_lag_sample_errors_total",
		"Lag samples that failed, by group.", "group")
	if err != nil {
		return nil, err
	}
	for _, g := range cfg.Groups {
		errs.WithLabelValues(g)
	}
	return &LagSampler{cfg: cfg, lag: lag, errors: errs}, nil
}

// Run samples every Interval until ctx is done; the first sample is taken
// at once. Failed samples are counted and logged, never fatal. Run closes
// its client before it returns nil.
func (l *LagSampler) Run(ctx context.Context) error {
	cl, err := kafka.NewClient(l.cfg.Client, kgo.MetadataMinAge(l.cfg.Interval))
	if err != nil {
		return fmt.Errorf("lag sampler: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		l.Sample(ctx, adm)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sample takes one sample of every group with adm and updates the gauges.
// A group's partitions that are no longer in its lag are removed.
func (l *LagSampler) Sample(ctx context.Context, adm *kadm.Client) {
	sctx, cancel := context.WithTimeout(ctx, max(l.cfg.Interval, time.Second))
	defer cancel()
	lags, err := adm.Lag(sctx, l.cfg.Groups...)
	if err != nil {
		if ctx.Err() == nil {
			l.cfg.Logger.Warn("lag sample failed", "groups", l.cfg.Groups, "err", err)
			for _, g := range l.cfg.Groups {
				l.errors.WithLabelValues(g).Inc()
			}
		}
		return
	}
	for _, g := range l.cfg.Groups {
		dl, ok := lags[g]
		if ok && errors.Is(dl.Error(), kerr.GroupIDNotFound) {
			// Not created yet: no member has joined or committed.
			l.lag.DeletePartialMatch(prometheus.Labels{"group": g})
			continue
		}
		if !ok || dl.Error() != nil {
			if ok && ctx.Err() == nil {
				l.cfg.Logger.Warn("lag sample failed", "group", g, "err", dl.Error())
			}
			l.errors.WithLabelValues(g).Inc()
			continue
		}
		l.lag.DeletePartialMatch(prometheus.Labels{"group": g})
		for topic, ps := range dl.Lag {
			for p, ml := range ps {
				if ml.Err != nil || ml.Lag < 0 {
					continue
				}
				l.lag.WithLabelValues(g, topic, strconv.Itoa(int(p))).Set(float64(ml.Lag))
			}
		}
	}
}
