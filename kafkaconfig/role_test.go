package kafkaconfig_test

import (
	"testing"

	"github.com/scattergather/scattergather/kafkaconfig"
)

// TestRoleWithDefaults: zero durations take their defaults, a negative
// commit interval or transaction gap (none) is kept, and a value set is
// left alone.
func TestRoleWithDefaults(t *testing.T) {
	r := kafkaconfig.Role{}.WithDefaults("x")
	if r.TransactionGap != kafkaconfig.DefaultTransactionGap || r.OffsetCommitInterval != kafkaconfig.DefaultOffsetCommitInterval ||
		r.SessionTimeout != kafkaconfig.DefaultSessionTimeout {
		t.Errorf("defaults: gap %s, commit interval %s, session %s", r.TransactionGap, r.OffsetCommitInterval, r.SessionTimeout)
	}
	r = kafkaconfig.Role{TransactionGap: -1, OffsetCommitInterval: -1}.WithDefaults("x")
	if r.TransactionGap != -1 || r.OffsetCommitInterval != -1 {
		t.Errorf("negative settings became gap %s, commit interval %s", r.TransactionGap, r.OffsetCommitInterval)
	}
	r = kafkaconfig.Role{TransactionGap: 7}.WithDefaults("x")
	if r.TransactionGap != 7 {
		t.Errorf("gap 7ns became %s", r.TransactionGap)
	}
}
