package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The life of the hop's client.
//
// Invariant: Run's goroutine alone builds, replaces and closes the client
// (Hop.cl, Hop.sess); Hop.current is what other goroutines read. An error
// a new client can heal (restartable) closes the client, revoking every
// partition as a rebalance would, and builds a new one after a backoff;
// any other ends Run. A static member leaves its group explicitly when Run
// returns.

// initProducer initialises a new client's transactional producer before
// it joins the group (exactly-once; see below for at-least-once). That fences
// the previous incarnation of the transactional id and has the broker
// abort the transaction it left open, so that nothing this instance reads
// on assignment waits for that transaction's timeout: with static
// membership a restarted instance is assigned its partitions at once, and
// the aggregator's restore reads its changelog read_committed in the
// assignment callback. franz-go would otherwise initialise the producer
// only at the first transaction, after the callback.
//
// At least once there is no producer to initialise: the client pings the
// brokers instead, so that an error no new client heals (a broker
// certificate it does not trust) ends Run at once, as it does exactly once.
// kgo's KIP-848 group loop retries dial errors, TLS ones included, and
// reports them only after many attempts. Other ping errors (a broker not
// up yet) are left to kgo's own retries, as before.
func (h *Hop) initProducer(ctx context.Context) error {
	if h.sess == nil {
		if err := h.cl.Ping(ctx); err != nil && !restartable(err) {
			return fmt.Errorf("connect to the brokers of %s: %w", h.cfg.Group, err)
		}
		return nil
	}
	if _, _, err := h.cl.ProducerID(ctx); err != nil {
		return fmt.Errorf("init producer id of %s: %w", h.cfg.TransactionalID, err)
	}
	return nil
}

// LogClientRestart is the message of the warning Run logs when it builds a
// new client (the chaos harness counts them in the role logs).
const LogClientRestart = "kafka client failed; closing it and building a new one"

// restart closes the client after cause, waits the backoff and builds a
// new one. It returns false when Run must stop instead: ctx ended or the
// hop was abandoned meanwhile (nil error), or the new client could not be
// built.
func (h *Hop) restart(ctx context.Context, cause error) (ok bool, err error) {
	h.consecutive++
	h.commitFails = 0
	n := h.restarts.Add(1)
	if h.restartsVec != nil {
		h.restartsVec.Inc()
	}
	backoff := h.cfg.RestartBackoff
	for i := 1; i < h.consecutive && backoff < h.cfg.MaxRestartBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, h.cfg.MaxRestartBackoff)
	h.log.Warn(LogClientRestart, "group", h.cfg.Group,
		"err", cause, "restarts", n, "in_a_row", h.consecutive, "backoff", backoff)
	// Closing revokes every partition (OnRevoked), as a rebalance would; a
	// static member keeps its place in the group for the new client.
	h.closeClient()
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, nil
	case <-h.abandoned:
		return false, nil
	case <-t.C:
	}
	if err := h.connect(); err != nil {
		return false, fmt.Errorf("restart: %w", err)
	}
	if h.isAbandoned() {
		// Abandon may have closed the old client, not this one.
		h.closeClient()
		return false, nil
	}
	return true, nil
}

// restartable reports whether err, which ended a batch, may heal with a new
// client: every Kafka error but those of authentication, authorisation,
// configuration, a missing topic and a fenced static member. Errors of the
// ProcessFunc never are.
func restartable(err error) bool {
	if _, ok := errors.AsType[*processError](err); ok {
		return false
	}
	if errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	if certificateError(err) {
		return false
	}
	for _, fatal := range fatalErrors {
		if errors.Is(err, fatal) {
			return false
		}
	}
	return true
}

// certificateError reports whether err is a broker certificate that failed
// verification (unknown CA, a name it does not cover, expired): a wrong
// --tls-ca-file or --tls-server-name, which no new client heals. kgo does
// not retry a dial that fails so, but Run would build new clients forever
// (backing off to MaxRestartBackoff) with the role never ready.
func certificateError(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	_, ok := errors.AsType[x509.CertificateInvalidError](err)
	return ok
}

// fatalErrors end Run: trying again with a new client does not help.
var fatalErrors = []error{
	kerr.SaslAuthenticationFailed, kerr.UnsupportedSaslMechanism, kerr.IllegalSaslState,
	kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed, kerr.DelegationTokenAuthorizationFailed,
	kerr.UnknownTopicOrPartition, kerr.UnknownTopicID, kerr.InvalidTopicException,
	kerr.UnsupportedVersion, kerr.UnsupportedForMessageFormat, kerr.UnsupportedCompressionType,
	kerr.InvalidConfig, kerr.InvalidTransactionTimeout, kerr.InvalidSessionTimeout, kerr.InvalidGroupID,
	kerr.InvalidRequiredAcks, kerr.PolicyViolation,
	kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord, kerr.CorruptMessage,
	kerr.FencedInstanceID,
}

// processError is an error of the ProcessFunc: it ends Run.
type processError struct{ err error }

func (e *processError) Error() string { return "process batch: " + e.err.Error() }

func (e *processError) Unwrap() error { return e.err }

// close closes the client for good when Run returns: a static member
// leaves its group explicitly, so that its partitions go to the others at
// once rather than after the session timeout.
func (h *Hop) close(ctx context.Context) {
	if h.sess == nil && h.cfg.CommitInterval > 0 && !h.isAbandoned() {
		h.flushHeld(ctx)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeCommitTimeout)
		if err := h.commitAcked(cctx); err != nil {
			h.log.Warn("last commit failed; the next owner consumes those records again", "group", h.cfg.Group, "err", err)
			// Not again in the revocation the close makes: a commit that
			// hung once would hold the stop past its bound.
			h.ackedMu.Lock()
			h.acked = nil
			h.ackedMu.Unlock()
		}
		cancel()
	}
	h.closeClient()
	if h.cfg.InstanceID == "" || h.isAbandoned() {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := h.leave(lctx); err != nil {
		h.log.Warn("leave group as a static member; its partitions wait for the session timeout", "group", h.cfg.Group,
			"instance_id", h.cfg.InstanceID, "err", err)
	}
}

// leave removes the hop's static member from its group (LeaveGroup naming
// its instance id), through a client of its own: the hop's is closed.
func (h *Hop) leave(ctx context.Context) error {
	cc := h.cfg.Client
	cc.NewHooks = nil // no metrics for a client of one request
	cl, err := NewClient(cc)
	if err != nil {
		return err
	}
	defer cl.Close()
	resps, err := kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(h.cfg.Group).InstanceIDs(h.cfg.InstanceID).
		Reason("instance stopping"))
	if err != nil {
		return err
	}
	var errs []error
	resps.EachError(func(r kadm.LeaveGroupResponse) {
		if !errors.Is(r.Err, kerr.UnknownMemberID) { // not in the group (any more)
			errs = append(errs, r.Err)
		}
	})
	return errors.Join(errs...)
}

// closeClient closes the client once; Close leaves the group (a dynamic
// member) and revokes every partition. With autocommit disabled
// (at-least-once) and in a transact session nothing is committed on the
// way out.
func (h *Hop) closeClient() {
	if h.closed {
		return
	}
	h.closed = true
	defer func() {
		// Closing revokes every partition; one whose revocation the
		// transaction session swallowed is revoked here.
		if stale := h.unowned(nil); len(stale) > 0 {
			h.log.Warn("revoking partitions whose revocation the transaction session did not pass on", "group", h.cfg.Group, "partitions", stale)
			h.revoke(context.Background(), h.cl, stale, true)
		}
		h.joined.Store(false)
		h.forgetAgain(nil)
		h.partitions.Store(0)
	}()
	if h.sess != nil {
		h.sess.Close()
		return
	}
	// At-least-once polls with BlockRebalanceOnPoll: a plain Close would
	// wait to leave the group behind a rebalance that this very poll
	// blocks, and hang when the batch in flight cannot finish.
	h.cl.CloseAllowingRebalance()
}

// Abandon closes the hop's client at once, from any goroutine, as a crash
// would leave it: Run's batch in flight may be stuck (an idempotent producer
// never gives up a batch that may have been written), so a revocation no
// longer waits for it, and nothing more is committed. Run then returns
// without building a new client or leaving the group. Tests use it to
// emulate a killed process; a role stops with its context.
func (h *Hop) Abandon() {
	h.abandon.Do(func() { close(h.abandoned) })
	h.current.Load().CloseAllowingRebalance()
}

func (h *Hop) isAbandoned() bool {
	select {
	case <-h.abandoned:
		return true
	default:
		return false
	}
}
