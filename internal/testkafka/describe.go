package testkafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Identity is what a broker turned out to be.
type Identity struct {
	// RealKafka is true for Apache Kafka in KRaft mode, false for kfake.
	RealKafka bool
	// Version is the release the API versions match, e.g. "v4.4", or
	// "kfake".
	Version string
	// MetadataVersion is the finalized metadata.version feature, e.g.
	// "4.4-IV2", or "" if the broker reports none.
	MetadataVersion string
	// ClusterID is the id DescribeCluster reports.
	ClusterID string
	// Evidence lists the checks that decided RealKafka.
	Evidence []string
}

// Identify tells real Apache Kafka from kfake. A KRaft broker (1)
// advertises DescribeQuorum and answers it with a leader of the metadata
// quorum, (2) describes its own "process.roles" config and (3) has a random
// 22 character cluster id. kfake implements none of them: it does not know
// DescribeQuorum, describes only the configs it emulates and is named
// "kfake" unless told otherwise. All three must agree, or Identify returns
// an error rather than guess.
func Identify(ctx context.Context, cl *kgo.Client) (Identity, error) {
	var id Identity
	adm := kadm.NewClient(cl)

	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return id, fmt.Errorf("api versions: %w", err)
	}
	var raw *kmsg.ApiVersionsResponse
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			return id, fmt.Errorf("api versions from node %d: %w", v.NodeID, v.Err)
		}
		if raw == nil {
			raw = v.Raw()
			id.Version = v.VersionGuess()
		}
	}
	if raw == nil {
		return id, errors.New("no broker answered api versions")
	}
	for _, f := range raw.FinalizedFeatures {
		if f.Name == "metadata.version" {
			id.MetadataVersion, _, _ = strings.Cut(kversion.FeatureLevelDescription(f.Name, f.MaxVersionLevel), ":")
		}
	}

	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return id, fmt.Errorf("metadata: %w", err)
	}
	id.ClusterID = md.Cluster

	votes := 0
	// 1. The metadata quorum.
	if _, ok := vs.Sorted()[0].KeyMaxVersion(kmsg.DescribeQuorum.Int16()); !ok {
		id.Evidence = append(id.Evidence, "DescribeQuorum not advertised")
	} else if leader, err := quorumLeader(ctx, cl); err != nil {
		return id, fmt.Errorf("describe quorum: %w", err)
	} else {
		votes++
		id.Evidence = append(id.Evidence, fmt.Sprintf("metadata quorum leader %d", leader))
	}
	// 2. A config only a KRaft broker has.
	roles, err := processRoles(ctx, adm, md.Brokers.NodeIDs()[0])
	if err != nil {
		return id, fmt.Errorf("describe broker configs: %w", err)
	}
	if roles != "" {
		votes++
		id.Evidence = append(id.Evidence, "process.roles="+roles)
	} else {
		id.Evidence = append(id.Evidence, "no process.roles config")
	}
	// 3. The cluster id.
	if len(id.ClusterID) == 22 && id.ClusterID != "kfake" {
		votes++
		id.Evidence = append(id.Evidence, "cluster id "+id.ClusterID)
	} else {
		id.Evidence = append(id.Evidence, fmt.Sprintf("cluster id %q", id.ClusterID))
	}

	switch votes {
	case 3:
		id.RealKafka = true
	case 0:
		// kfake implements a subset of the API keys, so a release
		// guessed from them means nothing.
		id.Version = "kfake"
	default:
		return id, fmt.Errorf("cannot tell real Kafka from kfake: %s", strings.Join(id.Evidence, "; "))
	}
	return id, nil
}

func quorumLeader(ctx context.Context, cl *kgo.Client) (int32, error) {
	req := kmsg.NewPtrDescribeQuorumRequest()
	rt := kmsg.NewDescribeQuorumRequestTopic()
	rt.Topic = "__cluster_metadata"
	rt.Partitions = append(rt.Partitions, kmsg.NewDescribeQuorumRequestTopicPartition())
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return 0, err
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, errors.New("response without the metadata partition")
	}
	p := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
		return 0, err
	}
	if p.LeaderID < 0 {
		return 0, errors.New("metadata quorum has no leader")
	}
	return p.LeaderID, nil
}

func processRoles(ctx context.Context, adm *kadm.Client, node int32) (string, error) {
	rcs, err := adm.DescribeBrokerConfigs(ctx, node)
	if err != nil {
		return "", err
	}
	rc, err := rcs.On(fmt.Sprint(node), nil)
	if err != nil {
		return "", err
	}
	if rc.Err != nil {
		return "", rc.Err
	}
	for _, c := range rc.Configs {
		if c.Key == "process.roles" {
			return c.MaybeValue(), nil
		}
	}
	return "", nil
}

// Describe returns one line saying which broker c is, for a suite to log:
// "kafka v4.4 (metadata.version 4.4-IV2, cluster <id>) at 127.0.0.1:19092".
// It asks the broker, and fails t if it cannot.
func Describe(t testing.TB, c *Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, err := Identify(ctx, c.Client(t))
	if err != nil {
		t.Fatalf("testkafka: describe %s broker: %v", c.Kind, err)
	}
	what := id.Version
	if id.RealKafka {
		what = "Apache Kafka " + id.Version
	}
	return fmt.Sprintf("%s: %s (metadata.version %s, cluster %s) at %s",
		c.Kind, what, id.MetadataVersion, id.ClusterID, strings.Join(c.Brokers, ","))
}
