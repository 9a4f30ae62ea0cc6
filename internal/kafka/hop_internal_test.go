package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/scattergather/scattergather/kafkaconfig"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRestartable pins which errors make Run build a new client and which
// end it.
func TestRestartable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"producer fenced", fmt.Errorf("end transaction: %w", kerr.ProducerFenced), true},
		{"epoch bumped, joined", fmt.Errorf("end transaction: %w", errors.Join(kerr.InvalidProducerEpoch, io.EOF)), true},
		{"member removed", fmt.Errorf("commit offsets: %w", kerr.UnknownMemberID), true},
		{"generation moved on", fmt.Errorf("commit offsets: %w", kerr.IllegalGeneration), true},
		{"begin after a fatal producer error", fmt.Errorf("begin transaction: producer ID has a fatal, unrecoverable error, err: %w", kerr.ProducerFenced), true},
		{"broker gone", fmt.Errorf("produce: %w", io.ErrUnexpectedEOF), true},
		{"record timed out", fmt.Errorf("produce: %w", kgo.ErrRecordTimeout), true},
		{"process error", &processError{errors.New("restore failed")}, false},
		{"process error wrapping a kafka error", &processError{kerr.ProducerFenced}, false},
		{"not authorised", fmt.Errorf("produce to x: %w", kerr.TopicAuthorizationFailed), false},
		{"transactional id not authorised", fmt.Errorf("begin: %w", kerr.TransactionalIDAuthorizationFailed), false},
		{"sasl", kerr.SaslAuthenticationFailed, false},
		{"topic missing", fmt.Errorf("produce to x: %w", kerr.UnknownTopicOrPartition), false},
		{"record too large", fmt.Errorf("produce to x: %w", kerr.MessageTooLarge), false},
		{"another instance has the instance id", fmt.Errorf("end transaction: %w", kerr.FencedInstanceID), false},
		{"client closed", kgo.ErrClientClosed, false},
		// A broker certificate that fails verification is a wrong CA or
		// server name: as kgo wraps it after a failed TLS dial.
		{"unknown CA", fmt.Errorf("init producer id of g-a: unable to dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{"name not in the certificate", fmt.Errorf("unable to dial: %w", x509.HostnameError{Host: "kafka.example"}), false},
		{"certificate expired", fmt.Errorf("unable to dial: %w", x509.CertificateInvalidError{Reason: x509.Expired}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := restartable(tc.err); got != tc.want {
				t.Errorf("restartable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestAssignedRevokesWhatTheSyncDropped: a partition the role owns that the
// latest sync no longer lists (its revocation swallowed by the transaction
// session) is revoked before the assignment is passed on, once; a
// revocation of what the role no longer owns is not passed on again.
func TestAssignedRevokesWhatTheSyncDropped(t *testing.T) {
	var calls []string
	h, err := NewHop(HopConfig{
		Client: kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}}, Group: "g", Topics: []string{"t"},
		Guarantee: kafkaconfig.ExactlyOnce, TransactionalID: "g-a",
		OnAssigned: func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
			calls = append(calls, fmt.Sprint("assigned ", as))
		},
		OnRevoked: func(_ context.Context, _ *kgo.Client, rev map[string][]int32) {
			calls = append(calls, fmt.Sprint("revoked ", rev))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.cl.Close()
	ctx := t.Context()
	sync := func(m map[string][]int32) { h.synced.last.Store(&m) }

	sync(map[string][]int32{"t": {0, 1, 2}})
	h.assigned(ctx, nil, map[string][]int32{"t": {0, 1, 2}})
	// A cooperative rebalance takes 0 and 2: the session swallows their
	// revocation; the next sync lists 1 only.
	sync(map[string][]int32{"t": {1}})
	h.assigned(ctx, nil, map[string][]int32{})
	// A revocation of 0, which the role no longer owns, is not passed on.
	h.revoke(ctx, nil, map[string][]int32{"t": {0, 1}}, false)

	want := "assigned map[t:[0 1 2]] | revoked map[t:[0 2]] | assigned map[] | revoked map[t:[1]]"
	if got := strings.Join(calls, " | "); got != want {
		t.Errorf("callbacks:\n got %s\nwant %s", got, want)
	}
	if joined, n := h.Membership(); !joined || n != 0 {
		t.Errorf("membership joined=%v partitions=%d, want true 0", joined, n)
	}
}

// TestNewHopKeepsTheCallersConfig: NewHop validates what it was given and
// fills the defaults on its own copy, whose slices are its own: the
// caller's config is not changed, and what the caller changes afterwards
// does not reach the hop.
func TestNewHopKeepsTheCallersConfig(t *testing.T) {
	cfg := HopConfig{
		Client:          kafkaconfig.Client{Brokers: []string{"127.0.0.1:1"}},
		Group:           "g",
		Topics:          []string{"in"},
		TransactionalID: "g-0",
	}
	h, err := NewHop(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.closeClient()
	if cfg.Guarantee != "" || cfg.DrainTimeout != 0 || cfg.RestartBackoff != 0 {
		t.Fatalf("the caller's config was changed: %+v", cfg)
	}
	if h.cfg.Guarantee != kafkaconfig.ExactlyOnce || h.cfg.DrainTimeout != 10*time.Second || h.cfg.MaxRestartBackoff != 10*time.Second {
		t.Fatalf("defaults not filled: guarantee %q, drain %s, max restart backoff %s", h.cfg.Guarantee, h.cfg.DrainTimeout, h.cfg.MaxRestartBackoff)
	}
	cfg.Topics[0] = "other"
	if h.cfg.Topics[0] != "in" {
		t.Fatalf("the caller's later change reached the hop: topics %v", h.cfg.Topics)
	}
}

func TestReadRanges(t *testing.T) {
	fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "results", Partitions: []kgo.FetchPartition{
		{Partition: 2, Records: []*kgo.Record{{Offset: 7}, {Offset: 9}, {Offset: 12}}},
		{Partition: 0, Records: []*kgo.Record{{Offset: 3}}},
		{Partition: 1},
	}}}}}
	if got, want := readRanges(fetches), "results/0:3-3 results/2:7-12"; got != want {
		t.Fatalf("readRanges = %q, want %q", got, want)
	}
}

// TestMarksAreForgotten: once every partition an aborted batch read was
// polled again (or revoked), the hop holds no mark, so that its polls skip
// the check (hop_again.go).
func TestMarksAreForgotten(t *testing.T) {
	fetches := func(ps ...int32) kgo.Fetches {
		var fps []kgo.FetchPartition
		for _, p := range ps {
			fps = append(fps, kgo.FetchPartition{Partition: p, Records: []*kgo.Record{{Offset: 5}}})
		}
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "in", Partitions: fps}}}}
	}
	h := &Hop{}
	h.markAgain(fetches(0, 1))
	if got := h.skippedAgain(fetches(0)); got != nil {
		t.Fatalf("skipped %v, polled from the mark", got)
	}
	h.forgetAgain(map[string][]int32{"in": {1}})
	if len(h.again) != 0 {
		t.Fatalf("marks left after every partition was polled again or revoked: %v", h.again)
	}
}
