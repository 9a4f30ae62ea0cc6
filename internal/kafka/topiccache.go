package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TopicCache tells whether topics exist, from the cluster's metadata,
// cached so that a role can check the topic a record names (a request's
// reply_to) before it writes there: a produce to a missing topic fails only
// after the client's metadata retries (seconds), and would hold back the
// whole batch. A topic seen is trusted for ExistsTTL, one found missing
// for MissingTTL, so that a topic created or deleted meanwhile is noticed
// soon; a lookup that failed is not tried again for MissingTTL, the topic
// taken to exist meanwhile. Safe for concurrent use.
type TopicCache struct {
	// ExistsTTL and MissingTTL default to 10s and 2s.
	ExistsTTL, MissingTTL time.Duration
	// Timeout bounds one metadata lookup; default 2s.
	Timeout time.Duration
	// Now defaults to time.Now.
	Now func() time.Time

	mu    sync.Mutex
	known map[string]topicSeen
}

type topicSeen struct {
	exists bool
	until  time.Time // the answer is trusted until then
}

// Exists reports whether topic exists, asking the cluster through cl when
// the cache has no fresh answer. An error means the cluster did not answer:
// callers should then assume the topic exists (the produce finds out)
// rather than refuse a record for a broker's hiccup.
func (c *TopicCache) Exists(ctx context.Context, cl *kgo.Client, topic string) (bool, error) {
	now := c.now()
	c.mu.Lock()
	seen, ok := c.known[topic]
	c.mu.Unlock()
	if ok && now.Before(seen.until) {
		return seen.exists, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.ttl(c.Timeout, 2*time.Second))
	defer cancel()
	// A request of its own: the client's cached metadata (kadm's
	// ListTopics) may be up to MetadataMinAge old.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	listed, terr := false, error(nil)
	if err == nil {
		for _, t := range resp.Topics {
			if t.Topic != nil && *t.Topic == topic {
				listed, terr = true, kerr.ErrorForCode(t.ErrorCode)
			}
		}
		if terr != nil && !errors.Is(terr, kerr.UnknownTopicOrPartition) {
			err = terr
		}
	}
	exists := err != nil || (listed && terr == nil)
	ttl := c.ttl(c.ExistsTTL, 10*time.Second)
	if err != nil || !exists {
		// A failed lookup is not asked again for MissingTTL either: while
		// the brokers do not answer, every record would wait for it.
		ttl = c.ttl(c.MissingTTL, 2*time.Second)
	}
	c.mu.Lock()
	if c.known == nil {
		c.known = map[string]topicSeen{}
	}
	if len(c.known) >= maxTopicsCached {
		clear(c.known) // a bound, not an eviction policy: the next lookups refill it
	}
	c.known[topic] = topicSeen{exists: exists, until: now.Add(ttl)}
	c.mu.Unlock()
	if err != nil {
		return true, fmt.Errorf("metadata of topic %s: %w", topic, err)
	}
	return exists, nil
}

// maxTopicsCached bounds the cache: requests name their reply topics.
const maxTopicsCached = 10_000

// Forget drops what the cache knows of topic, e.g. after a produce there
// failed with UNKNOWN_TOPIC_OR_PARTITION.
func (c *TopicCache) Forget(topic string) {
	c.mu.Lock()
	delete(c.known, topic)
	c.mu.Unlock()
}

func (c *TopicCache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *TopicCache) ttl(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
