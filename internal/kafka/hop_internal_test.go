package kafka

import (
	"errors"
	"fmt"
	"io"
	"testing"

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
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := restartable(tc.err); got != tc.want {
				t.Errorf("restartable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
