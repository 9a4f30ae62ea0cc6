package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/scattergather/scattergather/internal/kafka"
)

// groupOf returns the consumer group of a role process, as the roles name
// it by default.
func (h *Harness) groupOf(p *proc) string {
	switch p.role {
	case "processor":
		return h.cfg.Prefix + "processor." + string(Route)
	default:
		return h.cfg.Prefix + p.role
	}
}

// fault causes ev's fault through the broker and records it; a fault that
// could not be caused is an error of the run.
func (s *session) fault(ctx context.Context, ev event) {
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	group := s.h.groupOf(ev.victim)
	var (
		what string
		err  error
	)
	switch ev.fault {
	case faultFence:
		txnID := group + "-" + ev.victim.name
		what = "transactional id " + txnID
		if err = kafka.Fence(fctx, s.kcl, txnID); err == nil {
			s.rep.Fences++
		}
	case faultKick:
		if what, err = kick(fctx, s, group, ev.victim.name); err == nil {
			s.rep.Kicks++
		}
	}
	if err != nil {
		s.rep.Errors = append(s.rep.Errors, fmt.Sprintf("%s %s: %v", ev.fault, ev.victim.name, err))
		s.h.say("%s %s: %v", ev.fault, ev.victim.name, err)
		return
	}
	s.h.say("%s %s (%s); it keeps running", ev.fault, ev.victim.name, what)
}

// kick has the coordinator remove the member of group that belongs to the
// role instance (a static member names it), or, with dynamic members, one
// member of the group: the broker cannot tell which process a dynamic
// member is. It returns which member it removed.
//
// It waits (within ctx) until the group is Stable, every member joined:
// kfake never answers the JoinGroup of a member removed while it rejoins
// (Kafka answers it UNKNOWN_MEMBER_ID), which leaves that client waiting
// 40s for its join and its group without it. A group still rebalancing
// after 5s is kicked as it is.
func kick(ctx context.Context, s *session, group, instance string) (string, error) {
	var g kadm.DescribedGroup
	for settle := time.Now().Add(5 * time.Second); ; {
		gs, err := s.adm.DescribeGroups(ctx, group)
		if err != nil {
			return "", err
		}
		if g = gs[group]; g.Err != nil {
			return "", g.Err
		}
		if g.State == "Stable" || time.Now().After(settle) {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if len(g.Members) == 0 {
		return "", fmt.Errorf("group %s has no members (%s)", group, g.State)
	}
	m := g.Members[s.h.rng.IntN(len(g.Members))]
	for _, gm := range g.Members {
		if gm.InstanceID != nil && *gm.InstanceID == instance {
			m = gm
		}
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID, lm.InstanceID = m.MemberID, m.InstanceID
	lm.Reason = kmsg.StringPtr("chaos: kicked")
	req.Members = append(req.Members, lm)
	resp, err := req.RequestWith(ctx, s.kcl)
	if err != nil {
		return "", err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return "", err
	}
	for _, rm := range resp.Members {
		if err := kerr.ErrorForCode(rm.ErrorCode); err != nil {
			return "", fmt.Errorf("leave %s: %w", rm.MemberID, err)
		}
	}
	who := "member " + m.MemberID
	if m.InstanceID != nil {
		who += " (instance " + *m.InstanceID + ")"
	}
	return who, nil
}

// countRestarts counts, in the role logs, the times a role built a new
// Kafka client after an error (internal/kafka.LogClientRestart).
func countRestarts(roles []*proc) int {
	n := 0
	for _, p := range roles {
		f, err := os.Open(p.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), kafka.LogClientRestart) {
				n++
			}
		}
		f.Close()
	}
	return n
}
