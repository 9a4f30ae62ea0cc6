// Command inventory is scattergather embedded as a Go library: a stock
// lookup across a sharded inventory, with its own split, processor handler
// and merge, and the Go client asking it questions.
//
// A request names SKUs ({"skus": ["BLU-0001", "RED-0002"]}). The scatterer
// splits it by shard (split.go: each SKU goes to the one shard that holds
// it), processors look the SKUs up on their shard (handler.go, on the
// Warehouse of warehouse.go), and the aggregator merges the shards' answers
// into one stock report, items sorted by SKU and totals summed (merge.go).
// pipeline.go builds the three roles; this file runs them and the client.
//
//	go run ./inventory                          # in-process broker, the scenario below
//	go run ./inventory --skus BLU-0001,RED-0002 # look up your own SKUs
//	go run ./inventory --brokers 127.0.0.1:9092 # a Kafka of yours (topics under inventory.)
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 go run ./inventory # spans to a collector
//
// Without --skus it plays a scenario and checks every reply's status: a
// request on every shard (COMPLETE), three submitted at once and awaited
// (one shard, COMPLETE; a malformed SKU, PARTIAL with its shard ERROR; no
// SKUs, FAILED by the split), a shard failing twice and retried (COMPLETE),
// and a shard offline (PARTIAL, and FAILED for a request on that shard
// alone). It exits 1 when a reply is not what the scenario expects.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

func main() {
	var o options
	fs := flag.NewFlagSet("inventory", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `inventory: a stock lookup over a sharded inventory, scattergather embedded as a Go library.

The scatterer splits each request by shard, processors look the SKUs up on
their shard, the aggregator merges the answers into one report, and the Go
client prints every reply with its status and parts.

Usage:
  go run ./inventory [flags]

Without --skus it plays a scenario: a request on every shard, three requests
submitted at once, a shard that fails twice and is retried, and a shard that
is offline. It exits 1 when a reply is not what the scenario expects.

Flags:
`)
		fs.PrintDefaults()
	}
	brokers := fs.String("brokers", "", "Kafka brokers, host:port, comma separated; empty starts an in-process broker (kfake)")
	fs.StringVar(&o.prefix, "prefix", "inventory.", "prefix of the topic names (created when missing)")
	fs.IntVar(&o.processors, "processors", 2, "processor instances, one consumer group (the tasks topic has 4 partitions)")
	skus := fs.String("skus", "", "look up these SKUs, comma separated, instead of playing the scenario; the warehouse stocks "+stockedSKUs())
	verbose := fs.Bool("v", false, "log what the roles do on stderr")
	fs.Parse(os.Args[1:])
	usageError := func(msg string) {
		fmt.Fprintf(os.Stderr, "inventory: %s\n\n", msg)
		fs.Usage()
		os.Exit(2)
	}
	switch {
	case fs.NArg() > 0:
		usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case o.processors < 1:
		usageError(fmt.Sprintf("--processors %d: want at least 1", o.processors))
	}
	if *brokers != "" {
		o.brokers = strings.Split(*brokers, ",")
	}
	if *skus != "" {
		o.skus = strings.Split(*skus, ",")
	}
	if *verbose {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tp, err := tracerProvider(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
	if tp != nil {
		o.tracerProvider = tp
	}
	_, err = run(ctx, o, os.Stdout)
	if tp != nil {
		// Flush the spans, for at most 5s.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = errors.Join(err, tp.Shutdown(sctx))
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

// tracerProvider returns an OpenTelemetry SDK TracerProvider that sends the
// roles' spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, and nil otherwise. The SDK
// reads the other OTEL_* variables itself (OTEL_SERVICE_NAME over the
// default "inventory", OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER); the
// roles never read the environment nor use the OpenTelemetry globals.
func tracerProvider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithAttributes(semconv.ServiceName("inventory")), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// options are main's flags.
type options struct {
	brokers    []string // empty: an in-process broker
	prefix     string
	processors int
	skus       []string // empty: the scenario
	log        *slog.Logger
	// tracerProvider records the roles' spans; nil: none.
	tracerProvider trace.TracerProvider
}

// outcome is one request the run made and the reply it got.
type outcome struct {
	Step    string
	Payload string
	Reply   schemas.Reply
}

// summary is what a run did: every reply, and the processors' counters.
type summary struct {
	Outcomes   []outcome
	Processors processor.Stats
}

// run starts a broker when none is given, creates the topics, runs the
// pipeline, asks it the scenario's questions (or o.skus) with the Go
// client, prints every reply to out, and stops the pipeline. It returns the
// replies, and an error when a role failed or a reply is not what the
// scenario expects.
func run(ctx context.Context, o options, out io.Writer) (summary, error) {
	if len(o.brokers) == 0 {
		// kfake is franz-go's in-process Kafka: it speaks the protocol
		// (groups, transactions, read_committed) and needs nothing installed.
		fake, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return summary{}, fmt.Errorf("in-process broker: %w", err)
		}
		defer fake.Close()
		o.brokers = fake.ListenAddrs()
	}
	kc := kafkaconfig.Client{Brokers: o.brokers, ClientID: "inventory-example"}
	topics := kafkaconfig.Topics{Prefix: o.prefix}
	if _, err := kafkaconfig.CreateTopics(ctx, kc, topics, layout, []string{string(Route)}); err != nil {
		return summary{}, fmt.Errorf("topics: %w", err)
	}

	warehouse := NewWarehouse(demoStock)
	p, err := newPipeline(kc, topics, o.processors, warehouse, o.log, o.tracerProvider)
	if err != nil {
		return summary{}, err
	}
	pctx, stopPipeline := context.WithCancel(ctx)
	defer stopPipeline()
	done := make(chan error, 1)
	go func() { done <- p.run(pctx) }()

	// The client: it reads the replies topic from its end at New, so it
	// sees every reply to a request it sends after.
	c, err := client.New(ctx, client.Config{Client: kc, Topics: topics, Logger: o.log})
	if err != nil {
		stopPipeline()
		return summary{}, errors.Join(err, <-done)
	}
	s := &session{c: c, out: out}
	if len(o.skus) > 0 {
		s.do(ctx, "your SKUs", o.skus, "")
	} else {
		s.scenario(ctx, warehouse)
	}
	c.Close()
	stopPipeline()
	err = <-done
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	st := p.stats()
	fmt.Fprintf(out, "\nprocessors: parts OK %d, ERROR %d; retries %d\n", st.OK, st.Error, st.Retries)
	return summary{Outcomes: s.outcomes, Processors: st}, errors.Join(err, errors.Join(s.errs...))
}

// session is the client side of a run: it sends requests, prints their
// replies, and keeps what went wrong.
type session struct {
	c        *client.Client
	out      io.Writer
	step     int
	outcomes []outcome
	errs     []error
}

// The SKUs the scenario asks for. shardOf puts RED-0001 and PUR-0001 on
// shard-0, RED-0002 and BLK-0002 on shard-1, BLU-0001, GRN-0001 and
// YLW-0002 on shard-2, BLU-0002, GRN-0002 and YLW-0001 on shard-3.
// PNK-0001 would be on shard-0, which does not stock it.
var (
	everyShard = []string{"RED-0001", "RED-0002", "BLU-0001", "GRN-0002", "PNK-0001"}
	oneShard   = []string{"BLU-0002", "YLW-0001"}
	malformed  = []string{"BLU-0001", "RED-0002", "red 2"}
)

// scenario plays the example's requests; see the package doc.
func (s *session) scenario(ctx context.Context, w *Warehouse) {
	// Do: submit and wait, in one call.
	s.do(ctx, "a SKU on every shard, and one nobody stocks", everyShard, schemas.ReplyComplete)

	// Submit several, then Await each: the requests run at once.
	s.section("Submit three requests at once, then Await each")
	batch := []struct {
		title string
		skus  []string
		want  schemas.ReplyStatus
	}{
		{"two SKUs on one shard: one task", oneShard, schemas.ReplyComplete},
		{"a malformed SKU: its shard answers ERROR at once, without retries", malformed, schemas.ReplyPartial},
		{"no SKUs: the split rejects the request, no task is sent", []string{}, schemas.ReplyFailed},
	}
	pending := make([]*client.Pending, len(batch))
	for i, b := range batch {
		pl, err := s.c.Submit(ctx, Route, query(b.skus), client.Options{})
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("submit %q: %w", b.title, err))
			continue
		}
		pending[i] = pl
	}
	for i, b := range batch {
		if pending[i] == nil {
			continue
		}
		reply, err := pending[i].Await(ctx)
		s.report(b.title, b.skus, reply, err, b.want)
	}

	// A transient failure: the shard of BLU-0001 fails twice; the third
	// try answers.
	s.section("A shard that fails twice")
	flaky := shardOf("BLU-0001")
	w.FailNext(flaky, 2)
	s.do(ctx, fmt.Sprintf("shard-%d fails twice, the processor retries it", flaky), everyShard, schemas.ReplyComplete)

	// A shard that stays down: its part is ERROR once the retries are
	// spent; the other shards still answer.
	s.section("A shard offline")
	down := shardOf(oneShard[0])
	w.SetOffline(down, true)
	s.do(ctx, fmt.Sprintf("shard-%d is offline: the report covers the other shards", down), everyShard, schemas.ReplyPartial)
	s.do(ctx, fmt.Sprintf("only SKUs of shard-%d: no part OK", down), oneShard, schemas.ReplyFailed)
	w.SetOffline(down, false)
}

// query is the payload of a request for skus.
func query(skus []string) []byte {
	b, _ := json.Marshal(StockQuery{SKUs: skus})
	return b
}

// section prints a heading.
func (s *session) section(title string) {
	fmt.Fprintf(s.out, "\n== %s\n", title)
}

// do asks for skus with Do (submit and wait) and reports the reply; want is
// the status the scenario expects ("": any).
func (s *session) do(ctx context.Context, title string, skus []string, want schemas.ReplyStatus) {
	if s.step == 0 {
		s.section("Do: submit and wait for the reply")
	}
	reply, err := s.c.Do(ctx, Route, query(skus), client.Options{Timeout: 5 * time.Second})
	s.report(title, skus, reply, err, want)
}

// report prints one reply: its status, every part's marker and the stock
// report it carries; a reply that is not COMPLETE says what it lacks.
func (s *session) report(title string, skus []string, reply schemas.Reply, err error, want schemas.ReplyStatus) {
	s.step++
	payload := string(query(skus))
	fmt.Fprintf(s.out, "\n%d. %s\n   request %s\n", s.step, title, payload)
	if err != nil {
		// client.ErrTimeout: no reply by the request's timeout plus the
		// client's grace; a role is down.
		fmt.Fprintf(s.out, "   no reply: %v\n", err)
		s.errs = append(s.errs, fmt.Errorf("step %d (%s): %w", s.step, title, err))
		return
	}
	s.outcomes = append(s.outcomes, outcome{Step: title, Payload: payload, Reply: reply})
	ok := 0
	for _, p := range reply.Parts {
		if p.Status == schemas.PartOK {
			ok++
		}
	}
	if len(reply.Parts) == 0 {
		// Rejected before it was scattered: no part was sent.
		fmt.Fprintf(s.out, "   %s: no parts\n", reply.Status)
	} else {
		fmt.Fprintf(s.out, "   %s: %d of %d parts OK\n", reply.Status, ok, len(reply.Parts))
	}
	for _, p := range reply.Parts {
		line := fmt.Sprintf("     %-8s %s", p.PartID, p.Status)
		if p.Error != "" {
			line += ": " + p.Error
		}
		fmt.Fprintln(s.out, line)
	}
	if reply.Status != schemas.ReplyComplete && reply.Error != "" {
		fmt.Fprintf(s.out, "   error: %s\n", reply.Error)
	}
	if len(reply.Payload) > 0 {
		var r StockReport
		if err := json.Unmarshal(reply.Payload, &r); err != nil {
			fmt.Fprintf(s.out, "   payload (not a stock report: %v): %s\n", err, reply.Payload)
		} else {
			printReport(s.out, r, reply.Status)
		}
	}
	if want != "" && reply.Status != want {
		fmt.Fprintf(s.out, "   UNEXPECTED: want %s\n", want)
		s.errs = append(s.errs, fmt.Errorf("step %d (%s): reply %s, want %s", s.step, title, reply.Status, want))
	}
}

// printReport prints a stock report; a partial one says which shards it
// covers.
func printReport(out io.Writer, r StockReport, status schemas.ReplyStatus) {
	covers := ""
	if status != schemas.ReplyComplete {
		ids := make([]string, len(r.Shards))
		for i, id := range r.Shards {
			ids[i] = string(id)
		}
		covers = " (PARTIAL: covers " + strings.Join(ids, ", ") + " only)"
	}
	fmt.Fprintf(out, "   report%s: %d units worth %s\n", covers, r.Units, money(r.ValueCents))
	for _, it := range r.Items {
		if !it.Found {
			fmt.Fprintf(out, "     %-8s   - not stocked\n", it.SKU)
			continue
		}
		fmt.Fprintf(out, "     %-8s %3d × %s\n", it.SKU, it.Stock, money(it.PriceCents))
	}
}

// money formats cents as dollars.
func money(cents int) string {
	return fmt.Sprintf("$%d.%02d", cents/100, cents%100)
}

// stockedSKUs lists the SKUs of demoStock, for --help.
func stockedSKUs() string {
	skus := make([]string, len(demoStock))
	for i, it := range demoStock {
		skus[i] = it.SKU
	}
	return strings.Join(skus, ", ")
}
