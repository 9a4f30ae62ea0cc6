package aggregator

import (
	"fmt"
	"strconv"
	"strings"
)

// PolicyKind is the kind of a completion [Policy].
type PolicyKind uint8

// The completion policies a manifest can name.
const (
	// PolicyAll completes when every expected part has a result, whatever
	// its status.
	PolicyAll PolicyKind = iota
	// PolicyQuorum completes when Quorum parts are OK, or when every part
	// has a result.
	PolicyQuorum
	// PolicyFirst completes at the first OK part, or when every part has a
	// result. It is a quorum of one.
	PolicyFirst
	// PolicyDeadline waits for the deadline, so that a part that failed may
	// still be answered OK by a later attempt. It completes earlier only
	// when every part is OK, since the reply can no longer change then.
	PolicyDeadline
)

// Policy says when a request is complete. Parts no longer awaited when a
// policy completes a request before its deadline are marked SKIPPED; at the
// deadline, parts without a result are MISSING.
type Policy struct {
	Kind PolicyKind
	// Quorum is the number of OK parts that completes the request: K for
	// quorum:K, 1 for first, 0 otherwise.
	Quorum int
}

// ParsePolicy parses a manifest's policy: "all" (also ""), "first",
// "deadline" or "quorum:K" with K a positive decimal integer. Anything else
// is an error.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "all":
		return Policy{Kind: PolicyAll}, nil
	case "first":
		return Policy{Kind: PolicyFirst, Quorum: 1}, nil
	case "deadline":
		return Policy{Kind: PolicyDeadline}, nil
	}
	k, ok := strings.CutPrefix(s, "quorum:")
	if !ok {
		return Policy{}, fmt.Errorf("policy %q: want all, first, deadline or quorum:K", s)
	}
	n, err := strconv.Atoi(k)
	if err != nil || n < 1 || strings.TrimLeft(k, "0123456789") != "" {
		return Policy{}, fmt.Errorf("policy %q: quorum needs a count of at least 1 (quorum:K)", s)
	}
	return Policy{Kind: PolicyQuorum, Quorum: n}, nil
}

// String returns p as a manifest writes it.
func (p Policy) String() string {
	switch p.Kind {
	case PolicyAll:
		return "all"
	case PolicyQuorum:
		return "quorum:" + strconv.Itoa(p.Quorum)
	case PolicyFirst:
		return "first"
	case PolicyDeadline:
		return "deadline"
	}
	return fmt.Sprintf("policy(%d)", p.Kind)
}

// check reports whether p can be met by a request of parts parts.
func (p Policy) check(parts int) error {
	if p.Kind == PolicyQuorum && p.Quorum > parts {
		return fmt.Errorf("policy %s: quorum exceeds the %d parts", p, parts)
	}
	return nil
}

// satisfied reports whether a request of n parts, got of which have a
// result and ok of which are OK, is complete before its deadline.
func (p Policy) satisfied(n, got, ok int) bool {
	switch p.Kind {
	case PolicyQuorum, PolicyFirst:
		return ok >= p.Quorum || got == n
	case PolicyDeadline:
		return ok == n
	default:
		return got == n
	}
}
