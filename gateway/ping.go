package gateway

import (
	"context"
	"fmt"
	"time"
)

// brokerDown is what the gateway knows of an unreachable Kafka: since when
// (the first failed ping of the outage) and the last ping's error.
type brokerDown struct {
	since time.Time
	err   error
}

// ping asks Kafka for metadata (no topics: the broker list only) every
// PingInterval, each time for at most PingTimeout, so that Ready turns
// false within about PingInterval + PingTimeout of Kafka becoming
// unreachable, and true again at the first answer. Neither the tail
// (a fetch to a broker that is gone is retried by the client, silently)
// nor the producer (idle between POSTs) would tell. One metadata request a
// second is the whole cost. It returns when ctx ends.
func (g *Gateway) ping(ctx context.Context) {
	t := time.NewTicker(g.cfg.PingInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, g.cfg.PingTimeout)
		err := g.producer.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		switch prev := g.down.Load(); {
		case err != nil && prev == nil:
			g.down.Store(&brokerDown{since: now, err: err})
			g.log.Warn("Kafka is unreachable; not ready until a broker answers", "err", err)
		case err != nil:
			g.down.Store(&brokerDown{since: prev.since, err: err})
		case prev != nil:
			g.down.Store(nil)
			g.log.Info("Kafka is reachable again", "after", now.Sub(prev.since).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unreachable returns why Kafka is unreachable, or nil when the last ping
// was answered (or none has failed yet).
func (g *Gateway) unreachable() error {
	d := g.down.Load()
	if d == nil {
		return nil
	}
	return fmt.Errorf("Kafka unreachable for %s: %w", time.Since(d.since).Round(time.Second), d.err)
}
