package aggregator

import "github.com/scattergather/scattergather/schemas"

// timer says that request id may have something due at at (Unix
// nanoseconds). Timers are never removed when a request's due time changes:
// a timer whose at is not the request's current due time is stale and is
// dropped when it is popped. A request has at most a few timers in its life
// (orphan expiry, deadline, forget), so stale ones cost little.
type timer struct {
	at int64
	id schemas.CorrelationID
}

// timers is a binary min-heap on at, typed so that a push does not box.
type timers []timer

func (h timers) Len() int { return len(h) }

// peek returns the earliest timer; h must not be empty.
func (h timers) peek() timer { return h[0] }

func (h *timers) push(at int64, id schemas.CorrelationID) {
	*h = append(*h, timer{at: at, id: id})
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if s[parent].at <= s[i].at {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

// pop removes and returns the earliest timer; h must not be empty.
func (h *timers) pop() timer {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = timer{}
	s = s[:last]
	i := 0
	for {
		l, r, least := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].at < s[least].at {
			least = l
		}
		if r < len(s) && s[r].at < s[least].at {
			least = r
		}
		if least == i {
			break
		}
		s[i], s[least] = s[least], s[i]
		i = least
	}
	*h = s
	return top
}
