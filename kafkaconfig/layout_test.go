package kafkaconfig_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/testkafka"
	"github.com/scattergather/scattergather/kafkaconfig"
)

func TestEnsureTopics(t *testing.T) {
	c := testkafka.New(t)
	adm := c.Admin(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	layout := kafkaconfig.Layout{Partitions: 3, ResultPartitions: 2, ReplicationFactor: -1}
	specs := topics.Specs(layout, []string{"search", "quotes"})

	created, err := kafkaconfig.EnsureTopics(t.Context(), adm, specs)
	if err != nil {
		t.Fatalf("first ensure: %v", err)
	}
	if len(created) != len(specs) {
		t.Fatalf("created %v, want all %d topics", created, len(specs))
	}
	// A fresh client: the admin client above may serve the "unknown topic"
	// metadata of its first look from its cache for a few seconds. A
	// broker's metadata may take a moment to show a topic just created
	// (Kafka 4.4 under load answered 0 partitions once): ask again for up
	// to 10s.
	want := map[string]int{topics.Results(): 2, topics.State(): 2, topics.Tasks("search"): 3}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		details, err := c.Admin(t).ListTopics(t.Context(), topics.Results(), topics.State(), topics.Tasks("search"))
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		for name, n := range want {
			if got := len(details[name].Partitions); got != n {
				wrong = append(wrong, fmt.Sprintf("%s: %d partitions, want %d", name, got, n))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", strings.Join(wrong, "; "))
		}
	}
	cfgs, err := adm.DescribeTopicConfigs(t.Context(), topics.State())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On(topics.State(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var policy string
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		t.Errorf("%s cleanup.policy = %q, want compact", topics.State(), policy)
	}

	// Idempotent: nothing new the second time.
	adm = c.Admin(t)
	created, err = kafkaconfig.EnsureTopics(t.Context(), adm, specs)
	if err != nil || len(created) != 0 {
		t.Fatalf("second ensure: created %v, err %v; want nothing, nil", created, err)
	}

	// Co-partitioning: results exists with 2 partitions; asking for 4 is an
	// error that names the topic, not a silent mismatch.
	layout.ResultPartitions = 4
	_, err = kafkaconfig.EnsureTopics(t.Context(), adm, topics.Specs(layout, []string{"search", "quotes"}))
	var pm *kafkaconfig.PartitionMismatchError
	if !errors.As(err, &pm) {
		t.Fatalf("ensure with 4 result partitions: %v, want a PartitionMismatchError", err)
	}
	if pm.Have != 2 || pm.Want != 4 {
		t.Errorf("mismatch %+v, want have 2 want 4", pm)
	}
	t.Log(err)
}

func TestLayoutValidate(t *testing.T) {
	tests := []struct {
		name string
		l    kafkaconfig.Layout
		ok   bool
	}{
		{"good", kafkaconfig.Layout{Partitions: 1, ResultPartitions: 1, ReplicationFactor: -1}, true},
		{"rf 3", kafkaconfig.Layout{Partitions: 6, ResultPartitions: 6, ReplicationFactor: 3}, true},
		{"no partitions", kafkaconfig.Layout{Partitions: 0, ResultPartitions: 1, ReplicationFactor: 1}, false},
		{"rf 0", kafkaconfig.Layout{Partitions: 1, ResultPartitions: 1, ReplicationFactor: 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.l.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestValidRouteName(t *testing.T) {
	for _, name := range []string{"search", "a.b_c-1"} {
		if err := kafkaconfig.ValidRouteName(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for _, name := range []string{"", "a b", "x/y", "ü"} {
		if err := kafkaconfig.ValidRouteName(name); err == nil {
			t.Errorf("%q: no error", name)
		}
	}
}

func TestParseGuarantee(t *testing.T) {
	for in, want := range map[string]kafkaconfig.Guarantee{"exactly-once": kafkaconfig.ExactlyOnce, " AT-LEAST-ONCE ": kafkaconfig.AtLeastOnce} {
		if g, err := kafkaconfig.ParseGuarantee(in); err != nil || g != want {
			t.Errorf("%q: %v %v", in, g, err)
		}
	}
	if _, err := kafkaconfig.ParseGuarantee("maybe-once"); err == nil {
		t.Error("maybe-once accepted")
	}
}

// TestEnsureTopicsConcurrently: instances starting together race to create
// the same topics; every one of them must succeed, and each topic is
// created once.
func TestEnsureTopicsConcurrently(t *testing.T) {
	c := testkafka.New(t)
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	specs := topics.Specs(kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}, []string{"a", "b"})
	const n = 4
	created := make(chan []string, n)
	errs := make(chan error, n)
	for range n {
		// A short metadata cache, as the CLI's topic setup uses: a raced
		// topic is then seen quickly.
		adm := kadm.NewClient(c.Client(t, kgo.MetadataMinAge(100*time.Millisecond)))
		go func() {
			cr, err := kafkaconfig.EnsureTopics(t.Context(), adm, specs)
			created <- cr
			errs <- err
		}()
	}
	count := map[string]int{}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("ensure: %v", err)
		}
		for _, name := range <-created {
			count[name]++
		}
	}
	for _, s := range specs {
		if count[s.Name] != 1 {
			t.Errorf("%s created %d times, want 1", s.Name, count[s.Name])
		}
	}
}

// TestCreateTopics: the one-call form a library user takes creates the
// pipeline's topics, then finds them all in place.
func TestCreateTopics(t *testing.T) {
	c := testkafka.New(t)
	client := kafkaconfig.Client{Brokers: c.Brokers}
	topics := kafkaconfig.Topics{Prefix: c.Prefix}
	layout := kafkaconfig.Layout{Partitions: 2, ResultPartitions: 2, ReplicationFactor: -1}
	created, err := kafkaconfig.CreateTopics(t.Context(), client, topics, layout, []string{"search"})
	if err != nil {
		t.Fatal(err)
	}
	want := len(topics.Specs(layout, []string{"search"}))
	if len(created) != want {
		t.Fatalf("created %v, want %d topics", created, want)
	}
	if again, err := kafkaconfig.CreateTopics(t.Context(), client, topics, layout, []string{"search"}); err != nil || len(again) != 0 {
		t.Fatalf("second call: created %v, %v; want nothing, no error", again, err)
	}
	if _, err := kafkaconfig.CreateTopics(t.Context(), kafkaconfig.Client{}, topics, kafkaconfig.Layout{}, nil); err == nil ||
		!strings.Contains(err.Error(), "brokers") || !strings.Contains(err.Error(), "partitions") {
		t.Fatalf("bad config: %v, want the brokers and partitions named", err)
	}
}

// TestEmptyPrefix: an empty prefix names the topics the roles use, which
// take DefaultPrefix for it.
func TestEmptyPrefix(t *testing.T) {
	var empty kafkaconfig.Topics
	dflt := kafkaconfig.Topics{Prefix: kafkaconfig.DefaultPrefix}
	for _, pair := range [][2]string{
		{empty.Requests(), dflt.Requests()}, {empty.Tasks("x"), dflt.Tasks("x")}, {empty.Results(), dflt.Results()},
		{empty.Replies(), dflt.Replies()}, {empty.State(), dflt.State()}, {empty.DLQ(), dflt.DLQ()},
	} {
		if pair[0] != pair[1] {
			t.Errorf("empty prefix names %q, want %q", pair[0], pair[1])
		}
	}
}

// TestEnsureTopicsWaitsForLeaders: a real broker answers CreateTopics
// before its brokers know the new partitions' leaders. EnsureTopics must
// return only once they do, or a produce right after it fails with
// UNKNOWN_TOPIC_OR_PARTITION (as TestSASLRealKafka's once did). kfake's
// metadata answers leave the created topic without a leader, first for
// `leaderless` answers, then for good.
func TestEnsureTopicsWaitsForLeaders(t *testing.T) {
	for _, tt := range []struct {
		name       string
		leaderless int32
		wantErr    string
	}{
		{"leaders come", 4, ""},
		{"leaders never come", 1 << 30, "waiting for the leaders of topics "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := testkafka.NewKfake(t)
			topic := c.Name("t")
			served := leaderlessAfterCreate(t, c, topic, tt.leaderless)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			created, err := kafkaconfig.EnsureTopics(ctx, c.Admin(t), []kafkaconfig.TopicSpec{{Name: topic, Partitions: 2, ReplicationFactor: -1}})
			if len(created) != 1 {
				t.Fatalf("created %v, want %s", created, topic)
			}
			if tt.wantErr == "" {
				if err != nil || served.Load() != tt.leaderless {
					t.Fatalf("EnsureTopics returned %v after %d leaderless metadata answers, want nil after %d", err, served.Load(), tt.leaderless)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr+topic) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("EnsureTopics returned %v, want an error containing %q", err, tt.wantErr+topic)
			}
		})
	}
}

// leaderlessAfterCreate makes c answer the first n metadata requests for
// topic after its creation as if its partitions had no leader yet. It
// returns how many it answered so.
func leaderlessAfterCreate(t *testing.T, c *testkafka.Cluster, topic string, n int32) *atomic.Int32 {
	t.Helper()
	var created atomic.Bool
	var served atomic.Int32
	c.Fake.ControlKey(int16(kmsg.CreateTopics), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		created.Store(true)
		return nil, nil, false
	})
	host, port, err := net.SplitHostPort(c.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	portN, _ := strconv.Atoi(port)
	c.Fake.ControlKey(int16(kmsg.Metadata), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		req := kreq.(*kmsg.MetadataRequest)
		if !created.Load() || served.Load() >= n || len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != topic {
			return nil, nil, false
		}
		served.Add(1)
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 0, Host: host, Port: int32(portN)}}
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr(topic)
		for p := range int32(2) {
			rp := kmsg.NewMetadataResponseTopicPartition()
			rp.Partition, rp.Leader, rp.ErrorCode = p, -1, kerr.LeaderNotAvailable.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = []kmsg.MetadataResponseTopic{rt}
		return resp, nil, true
	})
	return &served
}
