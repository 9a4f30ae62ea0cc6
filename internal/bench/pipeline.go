package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/scatterer"
	"github.com/scattergather/scattergather/schemas"
)

// pipeline is the phase under test: a client, and the roles when they run
// in this process.
type pipeline struct {
	topics  kafkaconfig.Topics
	counter *recordCounter
	cl      *client.Client
	route   schemas.Route
	payload []byte
	opts    client.Options

	// The stack's goroutine; nil when the roles run elsewhere.
	stop   context.CancelFunc
	done   chan struct{}
	runErr error
}

// withCounter returns cc with a hook that counts what its clients write.
func withCounter(cc kafkaconfig.Client, c *recordCounter) kafkaconfig.Client {
	cc.Opts = append(slices.Clip(cc.Opts), kgo.WithHooks(c))
	return cc
}

// benchRoutes is the route table of an in-process pipeline: one route.
func benchRoutes(cfg *Config) (*routes.Table, error) {
	r := routes.Route{Name: cfg.Route, Mode: string(cfg.Mode), Timeout: routes.Duration(cfg.Timeout),
		MaxTimeout: routes.Duration(max(cfg.Timeout, scatterer.DefaultMaxTimeout)), Merge: routes.MergeSpec{Kind: "collect"}}
	if cfg.Mode == scatterer.Broadcast {
		for i := range cfg.Fanout {
			r.Recipients = append(r.Recipients, string(recipientID(i)))
		}
	} else {
		r.Fanout = cfg.Fanout
		r.MaxFanout = max(cfg.Fanout, scatterer.DefaultMaxFanout)
	}
	t := &routes.Table{Routes: []routes.Route{r}}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// startPipeline creates the topics and starts the roles (unless External),
// then the client.
func startPipeline(ctx context.Context, cfg *Config, topics kafkaconfig.Topics, h processor.Handler) (*pipeline, error) {
	p := &pipeline{topics: topics, counter: newRecordCounter(topics), route: schemas.Route(cfg.Route), payload: cfg.payload()}
	if cfg.Mode == scatterer.Split {
		p.opts.Fanout = cfg.Fanout
	}
	cc := withCounter(cfg.Client, p.counter)
	if !cfg.External {
		table, err := benchRoutes(cfg)
		if err != nil {
			return nil, fmt.Errorf("bench route: %w", err)
		}
		var specs []stack.ProcessorSpec
		if cfg.Mode == scatterer.Broadcast {
			for i := range cfg.Fanout {
				specs = append(specs, stack.ProcessorSpec{Route: p.route, Recipient: recipientID(i), Handler: h, Instances: cfg.Processors})
			}
		} else {
			specs = []stack.ProcessorSpec{{Route: p.route, Handler: h, Instances: cfg.Processors}}
		}
		st, err := stack.New(ctx, stack.Config{Client: cc, Topics: topics, Layout: cfg.Layout, Routes: table,
			Guarantee: cfg.Guarantee, TransactionGap: cfg.TransactionGap, Processors: specs, Logger: cfg.Logger})
		if err != nil {
			deleteTopics(ctx, cfg, topics.Prefix)
			return nil, fmt.Errorf("pipeline: %w", err)
		}
		sctx, stop := context.WithCancel(ctx)
		p.stop, p.done = stop, make(chan struct{})
		// The stack runs until close cancels sctx.
		go func() {
			defer close(p.done)
			p.runErr = st.Run(sctx)
		}()
	}
	cl, err := client.New(ctx, client.Config{Client: cc, Topics: topics, DefaultTimeout: cfg.Timeout, Logger: cfg.Logger})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pipeline client: %w", err), p.close(ctx, cfg))
	}
	p.cl = cl
	return p, nil
}

// send sends one request and waits for its reply.
func (p *pipeline) send(ctx context.Context) Outcome {
	pend, err := p.cl.Submit(ctx, p.route, p.payload, p.opts)
	if err != nil {
		return Outcome{Status: NoReply, Err: err}
	}
	reply, err := pend.Await(ctx)
	if err != nil {
		return Outcome{Status: NoReply, Err: err}
	}
	o := Outcome{Status: Failed}
	switch reply.Status {
	case schemas.ReplyComplete:
		o.Status = Complete
	case schemas.ReplyPartial:
		o.Status = Partial
	}
	for _, part := range reply.Parts {
		switch part.Status {
		case schemas.PartOK, schemas.PartError, schemas.PartExpired:
			o.Tasks++
		}
	}
	return o
}

// measure waits until the pipeline answers, then runs the load.
func (p *pipeline) measure(ctx context.Context, cfg *Config) (*Phase, error) {
	if err := waitReady(ctx, "pipeline", cfg.ReadyTimeout, p.send); err != nil {
		return nil, err
	}
	pr := phaseRun{name: "pipeline", load: cfg.Load, send: p.send, progress: cfg.Progress, tty: cfg.ProgressTTY}
	if !cfg.External {
		pr.bytes = p.counter.total
	}
	var settled *Settled
	if cfg.Settle > 0 {
		var err error
		if settled, err = pr.settle(ctx, cfg.Settle); err != nil {
			return nil, err
		}
	}
	ph, err := pr.run(ctx)
	if err != nil {
		return nil, err
	}
	ph.Settled = settled
	if !cfg.External {
		ph.Records = p.counter.stats()
		ph.KafkaRequests = p.counter.requestStats()
	}
	return ph, nil
}

// close stops the client and the roles and deletes the phase's topics.
func (p *pipeline) close(ctx context.Context, cfg *Config) error {
	if p.cl != nil {
		p.cl.Close()
	}
	if p.stop == nil {
		return nil
	}
	p.stop()
	<-p.done
	deleteTopics(ctx, cfg, p.topics.Prefix)
	if p.runErr != nil {
		return fmt.Errorf("pipeline roles: %w", p.runErr)
	}
	return nil
}

// waitReady sends requests until one comes back COMPLETE: the consumer
// groups have joined and every hop answers.
func waitReady(ctx context.Context, name string, timeout time.Duration, send func(context.Context) Outcome) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last Outcome
	for {
		last = send(ctx)
		if last.Status == Complete {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		// A quick failure (a produce error, say) is tried again after a
		// pause rather than at once.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	why := last.Status.String()
	if last.Err != nil {
		why = last.Err.Error()
	}
	return fmt.Errorf("%s: no COMPLETE reply within %s (last: %s)", name, timeout, why)
}

// deleteTopics deletes the topics and consumer groups under prefix, unless
// the run keeps them. It is best effort: a failure is logged.
func deleteTopics(ctx context.Context, cfg *Config, prefix string) {
	if cfg.KeepTopics || cfg.External {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(cfg.Client)
	if err != nil {
		cfg.Logger.Warn("delete bench topics", "prefix", prefix, "err", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var errs []error
	if groups, err := adm.ListGroups(ctx); err != nil {
		errs = append(errs, err)
	} else {
		var names []string
		for _, g := range groups.Groups() {
			if strings.HasPrefix(g, prefix) {
				names = append(names, g)
			}
		}
		if len(names) > 0 {
			if _, err := adm.DeleteGroups(ctx, names...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if topics, err := adm.ListTopics(ctx); err != nil {
		errs = append(errs, err)
	} else {
		var names []string
		for _, t := range topics.Names() {
			if strings.HasPrefix(t, prefix) {
				names = append(names, t)
			}
		}
		if len(names) > 0 {
			if _, err := adm.DeleteTopics(ctx, names...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		cfg.Logger.Warn("delete bench topics", "prefix", prefix, "err", err)
	}
}
