package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// QuoteRequest is the payload of the quotes route.
type QuoteRequest struct {
	Amount     float64 `json:"amount"`
	TermMonths int     `json:"term_months"`
}

// Quote is one provider's answer.
type Quote struct {
	Provider       string  `json:"provider"`
	Rate           float64 `json:"rate"`
	MonthlyPayment float64 `json:"monthly_payment"`
}

// Provider is a simulated loan provider: the broadcast example's recipients
// are "many external services that need to be queried".
type Provider struct {
	Name    string
	Latency time.Duration
	// Margin is added to the base rate, in percentage points.
	Margin float64
}

// Providers are the quotes route's recipients. initech is too slow for the
// route's one-second timeout, so every quote reply is PARTIAL and names it
// MISSING.
func Providers() []Provider {
	return []Provider{
		{Name: "acme", Latency: 20 * time.Millisecond, Margin: 1.10},
		{Name: "globex", Latency: 60 * time.Millisecond, Margin: 0.85},
		{Name: "initech", Latency: 3 * time.Second, Margin: 0.40},
	}
}

// Handler answers quote tasks as p.
func (p Provider) Handler() processor.Handler {
	return processor.HandlerFunc(func(ctx context.Context, t schemas.Task) ([]byte, error) {
		var q QuoteRequest
		if err := json.Unmarshal(t.Payload, &q); err != nil {
			return nil, processor.Permanent(fmt.Errorf("quote request: %w", err))
		}
		if q.Amount <= 0 || q.TermMonths <= 0 {
			return nil, processor.Permanent(fmt.Errorf("quote request: amount and term_months must be positive, got %v and %d", q.Amount, q.TermMonths))
		}
		select {
		case <-time.After(p.Latency):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return json.Marshal(p.Quote(q))
	})
}

// Quote computes p's offer for q; deterministic, so tests can check the best.
func (p Provider) Quote(q QuoteRequest) Quote {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", p.Name, q.TermMonths)
	rate := 3.0 + p.Margin + float64(h.Sum32()%50)/100 + float64(q.TermMonths)/120
	rate = math.Round(rate*100) / 100
	r := rate / 100 / 12
	n := float64(q.TermMonths)
	monthly := q.Amount * r / (1 - math.Pow(1+r, -n))
	return Quote{Provider: p.Name, Rate: rate, MonthlyPayment: math.Round(monthly*100) / 100}
}
