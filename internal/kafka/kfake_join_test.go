package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/testkafka"
)

// TestBrokerAnswersJoinOfRemovedMember removes a static member from its
// group (LeaveGroup naming its instance id) while its JoinGroup waits for a
// rebalance. Kafka answers that JoinGroup at once, UNKNOWN_MEMBER_ID; kfake
// never answers it, and a kgo client then waits for its join as long as its
// rebalance timeout plus 10s. So on kfake chaos kicks a member only once
// its group is Stable (internal/chaos kick), and the hop bounds
// GroupTransactSession.End, which waits for the joining member's heartbeat
// (hop_txn.go endTimeout).
//
// On kfake this pins the fault: when it fails there, kfake answers, and
// the chaos harness need not wait for a Stable group any more.
func TestBrokerAnswersJoinOfRemovedMember(t *testing.T) {
	c := testkafka.New(t)
	topic := c.CreateTopic(t, "in", 1, nil)
	group := c.Name("g")
	cl := c.Client(t)
	ctx := t.Context()
	join := func(ctx context.Context, instance, member string) (*kmsg.JoinGroupResponse, error) {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.InstanceID, req.MemberID = group, &instance, member
		req.ProtocolType = "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 10_000, 30_000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name = "range"
		meta := kmsg.NewConsumerMemberMetadata()
		meta.Topics = []string{topic}
		p.Metadata = meta.AppendTo(nil)
		req.Protocols = append(req.Protocols, p)
		return req.RequestWith(ctx, cl)
	}
	// Member a: the only one, so its group settles with it.
	a, err := join(ctx, "a", "")
	if err != nil || a.ErrorCode != 0 {
		t.Fatalf("join a: %v %v", err, kerr.ErrorForCode(a.ErrorCode))
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID, sync.InstanceID, sync.ProtocolType, sync.Protocol = group, a.Generation, a.MemberID, kmsg.StringPtr("a"), kmsg.StringPtr("consumer"), a.Protocol
	if resp, err := sync.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("sync a: %v", err)
	}
	// Member b joins: its JoinGroup waits for a to join again, which a never
	// does (this test sends no more for it), until the rebalance timeout.
	type answer struct {
		resp *kmsg.JoinGroupResponse
		err  error
		at   time.Time
	}
	answered := make(chan answer, 1)
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	go func() {
		r, err := join(jctx, "b", "")
		answered <- answer{r, err, time.Now()}
	}()
	time.Sleep(time.Second) // b's JoinGroup is with the coordinator
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.InstanceID = kmsg.StringPtr("b")
	leave.Members = append(leave.Members, m)
	if resp, err := leave.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("leave b: %v", err)
	}
	left := time.Now()
	var got answer
	select {
	case got = <-answered:
	case <-time.After(5 * time.Second):
	}
	if c.Kind == testkafka.KindKfake {
		if got.resp != nil || (got.err != nil && !errors.Is(got.err, context.DeadlineExceeded)) {
			t.Fatalf("kfake answered the removed member's JoinGroup (%v, %v): it no longer needs the workarounds", got.resp, got.err)
		}
		return
	}
	if got.err != nil || got.resp == nil || !errors.Is(kerr.ErrorForCode(got.resp.ErrorCode), kerr.UnknownMemberID) {
		t.Fatalf("the removed member's JoinGroup: %+v, %v; want UNKNOWN_MEMBER_ID within 5s of its removal", got.resp, got.err)
	}
	t.Logf("answered %s after the removal", got.at.Sub(left).Round(time.Millisecond))
}
