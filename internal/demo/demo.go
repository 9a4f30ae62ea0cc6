// Package demo plays the Scatter-Gather pattern's two solutions end to end on
// one broker: the seed's product search split across index shards and merged
// top-k, and a quote request broadcast to three providers, one of them too
// slow, answered PARTIAL with that provider named MISSING.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scattergather/scattergather/client"
	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/internal/routes"
	"github.com/scattergather/scattergather/internal/stack"
	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// CatalogSize and CatalogSeed make the demo catalogue.
const (
	CatalogSize = 20000
	CatalogSeed = 42
)

// Processors returns the processor groups that serve the demo routes: two
// instances sharing the search shards, one group per quote provider, and an
// echo group.
func Processors(cat *catalog.Catalog) []stack.ProcessorSpec {
	specs := []stack.ProcessorSpec{
		{Route: "search", Handler: Search(cat), Instances: 2},
		{Route: "echo", Handler: processor.Echo()},
	}
	for _, p := range Providers() {
		specs = append(specs, stack.ProcessorSpec{Route: "quotes", Recipient: schemas.PartID(p.Name), Handler: p.Handler()})
	}
	return specs
}

// Queries are the searches the demo sends.
var Queries = []string{
	"red running shoes", "leather wallet", "blue cotton shirt", "wooden desk lamp",
	"steel water bottle", "wool winter hat", "black leather boots", "green canvas backpack",
	"silver wrist watch", "yellow rain jacket", "cotton socks", "oak dining table",
}

// Config configures a demo run.
type Config struct {
	Client    kafkaconfig.Client
	Topics    kafkaconfig.Topics
	Guarantee kafkaconfig.Guarantee
	Out       io.Writer
	Logger    *slog.Logger
	// Searches to send; default 2 per query.
	Searches int
	// Quotes to send; default 3.
	Quotes int
	// After, if set, runs once the examples are played, while the pipeline
	// still runs (the CLI sends a request through the HTTP gateway); its
	// error fails the demo.
	After func(ctx context.Context) error
}

// Summary is what a demo run saw.
type Summary struct {
	Requests, Complete, Partial, Failed int
	Wrong                               int // replies whose content did not match the expectation
	P50, P99                            time.Duration
}

func (s Summary) String() string {
	return fmt.Sprintf("demo: requests=%d complete=%d partial=%d failed=%d wrong=%d p50=%s p99=%s",
		s.Requests, s.Complete, s.Partial, s.Failed, s.Wrong, s.P50.Round(time.Millisecond), s.P99.Round(time.Millisecond))
}

// Run builds the demo pipeline on the broker of cfg.Client, plays both
// examples, prints the replies and returns the summary. The pipeline is
// stopped before Run returns.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Searches == 0 {
		cfg.Searches = 2 * len(Queries)
	}
	if cfg.Quotes == 0 {
		cfg.Quotes = 3
	}
	cat := catalog.New(CatalogSize, CatalogSeed)
	st, err := stack.New(ctx, stack.Config{
		Client: cfg.Client, Topics: cfg.Topics, Guarantee: cfg.Guarantee,
		Layout:     kafkaconfig.Layout{Partitions: 4, ResultPartitions: 4, ReplicationFactor: -1},
		Routes:     routes.Demo(),
		Processors: Processors(cat),
		Logger:     cfg.Logger,
	})
	if err != nil {
		return Summary{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- st.Run(runCtx) }()
	defer func() {
		stop()
		<-runErr
	}()

	cl, err := client.New(ctx, client.Config{Client: cfg.Client, Topics: cfg.Topics, Logger: cfg.Logger})
	if err != nil {
		return Summary{}, err
	}
	defer cl.Close()

	var (
		mu        sync.Mutex
		sum       Summary
		latencies []time.Duration
	)
	record := func(r schemas.Reply, took time.Duration, wrong bool) {
		mu.Lock()
		defer mu.Unlock()
		sum.Requests++
		switch r.Status {
		case schemas.ReplyComplete:
			sum.Complete++
		case schemas.ReplyPartial:
			sum.Partial++
		default:
			sum.Failed++
		}
		if wrong {
			sum.Wrong++
		}
		latencies = append(latencies, took)
	}

	fmt.Fprintf(cfg.Out, "== split: product search across %d index shards (catalogue of %d products), merged top-10\n", 8, CatalogSize)
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Searches+cfg.Quotes)
	for i := range cfg.Searches {
		q := Queries[i%len(Queries)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload, _ := json.Marshal(map[string]any{"query": q, "k": 10})
			start := time.Now()
			reply, err := cl.Do(ctx, "search", payload, client.Options{Timeout: 5 * time.Second})
			if err != nil {
				errs <- fmt.Errorf("search %q: %w", q, err)
				return
			}
			want := cat.Search(q, 10, 0, 1)
			wrong := reply.Status != schemas.ReplyComplete || !sameHits(reply.Payload, want)
			record(reply, time.Since(start), wrong)
			if i < 3 {
				mu.Lock()
				printSearch(cfg.Out, q, reply, time.Since(start), wrong)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	fmt.Fprintf(cfg.Out, "\n== broadcast: one quote request to %d providers (initech is too slow for the 1s timeout)\n", len(Providers()))
	for i := range cfg.Quotes {
		q := QuoteRequest{Amount: float64(10000 * (i + 1)), TermMonths: 12 * (i + 1)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload, _ := json.Marshal(q)
			start := time.Now()
			reply, err := cl.Do(ctx, "quotes", payload, client.Options{Timeout: time.Second})
			if err != nil {
				errs <- fmt.Errorf("quote %+v: %w", q, err)
				return
			}
			wrong := !quoteAsExpected(reply, q)
			record(reply, time.Since(start), wrong)
			mu.Lock()
			printQuote(cfg.Out, q, reply, time.Since(start), wrong)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	slices.Sort(latencies)
	sum.P50 = percentile(latencies, 0.50)
	sum.P99 = percentile(latencies, 0.99)
	fmt.Fprintf(cfg.Out, "\n%s\n", sum)
	if cfg.After != nil {
		if err := cfg.After(ctx); err != nil {
			all = append(all, err)
		}
	}
	if err := errors.Join(all...); err != nil {
		return sum, err
	}
	if sum.Wrong > 0 {
		return sum, fmt.Errorf("demo: %d replies did not match the expected answer", sum.Wrong)
	}
	return sum, nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * q)
	return sorted[i]
}

func sameHits(payload []byte, want []catalog.Hit) bool {
	var got []catalog.Hit
	if err := json.Unmarshal(payload, &got); err != nil {
		return false
	}
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].ID != want[i].ID || got[i].Score != want[i].Score {
			return false
		}
	}
	return true
}

// quoteAsExpected checks a quote reply: PARTIAL, initech not answered in time
// (MISSING when the aggregator's deadline fired first, EXPIRED when initech's
// processor reported running out of time first: both say it did not make
// it), the others OK, and the best offer the lowest rate of the answering
// providers.
func quoteAsExpected(r schemas.Reply, q QuoteRequest) bool {
	if r.Status != schemas.ReplyPartial || len(r.Parts) != len(Providers()) {
		return false
	}
	best := Quote{Rate: 1e9}
	for _, p := range Providers() {
		po, ok := r.Part(schemas.PartID(p.Name))
		if !ok {
			return false
		}
		if p.Name == "initech" {
			if po.Status != schemas.PartMissing && po.Status != schemas.PartExpired {
				return false
			}
			if !strings.Contains(r.Error, "initech") {
				return false
			}
			continue
		}
		if po.Status != schemas.PartOK {
			return false
		}
		if qq := p.Quote(q); qq.Rate < best.Rate {
			best = qq
		}
	}
	var got struct {
		Best Quote `json:"best"`
	}
	return json.Unmarshal(r.Payload, &got) == nil && got.Best == best
}

func printSearch(w io.Writer, q string, r schemas.Reply, took time.Duration, wrong bool) {
	fmt.Fprintf(w, "search %q -> %s in %s, %d parts%s\n", q, r.Status, took.Round(time.Millisecond), len(r.Parts), verdict(wrong))
	var hits []catalog.Hit
	_ = json.Unmarshal(r.Payload, &hits)
	for i, h := range hits {
		if i == 3 {
			fmt.Fprintf(w, "    … %d more\n", len(hits)-3)
			break
		}
		fmt.Fprintf(w, "    %d. %-40s %8.2f  score %.3f\n", i+1, h.Name, h.Price, h.Score)
	}
}

func printQuote(w io.Writer, q QuoteRequest, r schemas.Reply, took time.Duration, wrong bool) {
	var got struct {
		Best Quote `json:"best"`
	}
	_ = json.Unmarshal(r.Payload, &got)
	var marks []string
	for _, p := range r.Parts {
		marks = append(marks, fmt.Sprintf("%s=%s", p.PartID, p.Status))
	}
	fmt.Fprintf(w, "quote %.0f over %d months -> %s in %s: best %s at %.2f%% (%.2f/month)%s\n    parts %s\n    %s\n",
		q.Amount, q.TermMonths, r.Status, took.Round(time.Millisecond), got.Best.Provider, got.Best.Rate, got.Best.MonthlyPayment,
		verdict(wrong), strings.Join(marks, " "), r.Error)
}

func verdict(wrong bool) string {
	if wrong {
		return "  ✗ NOT AS EXPECTED"
	}
	return ""
}
