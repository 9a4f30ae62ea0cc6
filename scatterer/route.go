package scatterer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/scattergather/scattergather/schemas"
)

// Mode is how a route scatters.
type Mode string

// The modes of the Scatter-Gather pattern.
const (
	// Split sends a different task per part to one pool of identical
	// processors (one consumer group). Tasks are keyed by part, so a shard
	// always lands on the same partition and so the same processor.
	Split Mode = "split"
	// Broadcast sends the same task to several different processors, one
	// consumer group per recipient (publish-subscribe); each recipient
	// answers as one part.
	Broadcast Mode = "broadcast"
)

// Part is one piece of a split request.
type Part struct {
	ID      schemas.PartID
	Payload []byte
}

// SplitFunc divides a request into parts. fanout is the number of parts
// wanted (the request's, else the route's default); a SplitFunc may return
// another count when the payload decides it (JSONArray). An error rejects the
// request: it is dead-lettered and answered FAILED.
type SplitFunc func(req schemas.Request, fanout int) ([]Part, error)

// Shards returns a SplitFunc that sends the whole payload to each of fanout
// shards, named shard-0 … shard-<fanout-1>: the operation runs on a whole
// partitioned data store, each processor searching its own shard.
func Shards() SplitFunc {
	return func(req schemas.Request, fanout int) ([]Part, error) {
		parts := make([]Part, fanout)
		for i := range parts {
			parts[i] = Part{ID: ShardID(i), Payload: req.Payload}
		}
		return parts, nil
	}
}

// ShardID returns the part id of shard i.
func ShardID(i int) schemas.PartID { return schemas.PartID("shard-" + strconv.Itoa(i)) }

// ParseShardID returns the shard number of a part id made by ShardID.
func ParseShardID(id schemas.PartID) (int, error) {
	s, ok := strings.CutPrefix(string(id), "shard-")
	if !ok {
		return 0, fmt.Errorf("part id %q is not a shard id (shard-<n>)", id)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("part id %q is not a shard id (shard-<n>)", id)
	}
	return n, nil
}

// JSONArray returns a SplitFunc for embarrassingly parallel work: the payload
// is a JSON array and each element becomes one part, named item-0 … The
// request's fan-out is the array's length.
func JSONArray() SplitFunc {
	return func(req schemas.Request, _ int) ([]Part, error) {
		var items []json.RawMessage
		if err := json.Unmarshal(req.Payload, &items); err != nil {
			return nil, fmt.Errorf("payload is not a JSON array: %w", err)
		}
		parts := make([]Part, len(items))
		for i, it := range items {
			parts[i] = Part{ID: schemas.PartID("item-" + strconv.Itoa(i)), Payload: it}
		}
		return parts, nil
	}
}

// Route says how requests of one name are scattered.
type Route struct {
	Name schemas.Route
	Mode Mode
	// Fanout is the default number of parts of a split route; a request may
	// ask for another count up to MaxFanout.
	Fanout int
	// MaxFanout caps the parts of one request; default 256.
	MaxFanout int
	// Split divides a split route's request; default Shards().
	Split SplitFunc
	// Recipients of a broadcast route; each is one part and one consumer group.
	Recipients []schemas.PartID
	// Timeout is the default time a request has, from its submission, before
	// the aggregator answers with what it has; default 5s.
	Timeout time.Duration
	// MaxTimeout caps a request's own timeout; default 5m.
	MaxTimeout time.Duration
	// Policy is the completion policy written into the manifest; default
	// "all".
	Policy string
	// Hedge, on a split route, makes the aggregator re-issue a part that
	// has not answered in time to another processor (see Hedge); nil: no
	// hedging.
	Hedge *Hedge
}

// Route defaults.
const (
	DefaultMaxFanout  = 256
	DefaultTimeout    = 5 * time.Second
	DefaultMaxTimeout = 5 * time.Minute
)

// withDefaults returns r with its zero fields set to their defaults.
func (r Route) withDefaults() Route {
	if r.MaxFanout == 0 {
		r.MaxFanout = DefaultMaxFanout
	}
	if r.Timeout == 0 {
		r.Timeout = DefaultTimeout
	}
	if r.MaxTimeout == 0 {
		r.MaxTimeout = DefaultMaxTimeout
	}
	if r.Policy == "" {
		r.Policy = "all"
	}
	if r.Mode == Split && r.Split == nil {
		r.Split = Shards()
	}
	if r.Hedge != nil {
		h := r.Hedge.withDefaults()
		r.Hedge = &h
	}
	return r
}

// Validate reports every problem with r at once.
func (r Route) Validate() error {
	var errs []error
	if err := kafkaconfig.ValidRouteName(string(r.Name)); err != nil {
		errs = append(errs, err)
	}
	name := r.Name
	switch r.Mode {
	case Split:
		if r.Fanout < 1 {
			errs = append(errs, fmt.Errorf("route %s: fanout %d, want at least 1", name, r.Fanout))
		}
		if len(r.Recipients) > 0 {
			errs = append(errs, fmt.Errorf("route %s: recipients are for broadcast routes, this one splits", name))
		}
	case Broadcast:
		if len(r.Recipients) == 0 {
			errs = append(errs, fmt.Errorf("route %s: broadcast needs at least one recipient", name))
		}
		seen := map[schemas.PartID]bool{}
		for _, p := range r.Recipients {
			if err := kafkaconfig.ValidRouteName(string(p)); err != nil {
				errs = append(errs, fmt.Errorf("route %s: recipient: %w", name, err))
			}
			if seen[p] {
				errs = append(errs, fmt.Errorf("route %s: recipient %q listed twice", name, p))
			}
			seen[p] = true
		}
	default:
		errs = append(errs, fmt.Errorf("route %s: mode %q, want %q or %q", name, r.Mode, Split, Broadcast))
	}
	if r.MaxFanout < 0 || (r.MaxFanout > 0 && r.Mode == Split && r.Fanout > r.MaxFanout) {
		errs = append(errs, fmt.Errorf("route %s: max fanout %d is below the fanout %d", name, r.MaxFanout, r.Fanout))
	}
	if r.Mode == Broadcast && r.MaxFanout > 0 && len(r.Recipients) > r.MaxFanout {
		errs = append(errs, fmt.Errorf("route %s: %d recipients exceed max fanout %d", name, len(r.Recipients), r.MaxFanout))
	}
	if r.Timeout < 0 {
		errs = append(errs, fmt.Errorf("route %s: timeout %s is negative", name, r.Timeout))
	}
	if r.MaxTimeout < 0 || (r.MaxTimeout > 0 && r.Timeout > r.MaxTimeout) {
		errs = append(errs, fmt.Errorf("route %s: max timeout %s is below the timeout %s", name, r.MaxTimeout, r.Timeout))
	}
	if r.Policy != "" {
		if err := ValidatePolicy(r.Policy, r.partCount()); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", name, err))
		}
	}
	if err := r.validHedge(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r Route) partCount() int {
	if r.Mode == Broadcast {
		return len(r.Recipients)
	}
	return r.Fanout
}

// ValidatePolicy checks a completion policy: all, first, deadline or
// quorum:K with 1 <= K <= parts (parts 0 skips the upper bound).
func ValidatePolicy(p string, parts int) error {
	switch {
	case p == "all", p == "first", p == "deadline":
		return nil
	case strings.HasPrefix(p, "quorum:"):
		k, err := strconv.Atoi(strings.TrimPrefix(p, "quorum:"))
		if err != nil || k < 1 {
			return fmt.Errorf("policy %q: quorum needs a count of at least 1 (quorum:K)", p)
		}
		if parts > 0 && k > parts {
			return fmt.Errorf("policy %q: quorum of %d exceeds the %d parts", p, k, parts)
		}
		return nil
	}
	return fmt.Errorf("policy %q: want all, first, deadline or quorum:K", p)
}
