package kafka_test

import (
	"testing"
	"time"

	"github.com/scattergather/scattergather/internal/kafka"
	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestTopicCache: a topic's existence is asked of the cluster once per
// TTL: a missing topic created meanwhile is seen after MissingTTL, an
// existing one deleted after ExistsTTL.
func TestTopicCache(t *testing.T) {
	c := testkafka.New(t)
	cl := c.Client(t)
	now := time.Now()
	tc := &kafka.TopicCache{ExistsTTL: 10 * time.Second, MissingTTL: 2 * time.Second, Now: func() time.Time { return now }}
	topic := c.Name("replies.x")
	exists := func(want bool, when string) {
		t.Helper()
		got, err := tc.Exists(t.Context(), cl, topic)
		if err != nil || got != want {
			t.Fatalf("%s: exists %v (%v), want %v", when, got, err, want)
		}
	}
	exists(false, "before it is created")
	c.CreateTopic(t, "replies.x", 1, nil)
	exists(false, "created, within the missing TTL")
	now = now.Add(2 * time.Second)
	exists(true, "created, the missing TTL passed")
	if _, err := c.Admin(t).DeleteTopics(t.Context(), topic); err != nil {
		t.Fatal(err)
	}
	now = now.Add(9 * time.Second)
	exists(true, "deleted, within the exists TTL")
	now = now.Add(time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := tc.Exists(t.Context(), cl, topic)
		if err == nil && !got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted, the exists TTL passed: still exists after 15s (%v)", err)
		}
		now = now.Add(10 * time.Second) // a real broker may list a deleted topic a little longer
		time.Sleep(100 * time.Millisecond)
	}
}
