package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/scattergather/scattergather/internal/catalog"
	"github.com/scattergather/scattergather/processor"
	"github.com/scattergather/scattergather/schemas"
)

// Limits of a search request's k.
const (
	DefaultSearchK = 10
	MaxSearchK     = 100
)

// SearchRequest is the payload of a task for the [Search] handler.
type SearchRequest struct {
	Query string `json:"query"`
	// K is how many hits to return, default DefaultSearchK, at most
	// MaxSearchK.
	K int `json:"k,omitempty"`
}

// Search returns the processor handler of the demo, a product search over a
// partitioned index: the task's PartID names the shard, "shard-<i>" with i
// in [0, PartCount), and the handler searches only the products of that
// shard (product j is in shard j % PartCount). The payload is a
// [SearchRequest], {"query":"red running shoes","k":10}; the answer is the
// JSON array of the shard's top k [catalog.Hit]s, by score, highest first,
// ties by id, which is the order the aggregator's top-k merge keeps, so the
// merged answer equals the search of the whole catalogue. A payload that is
// not such JSON, a k out of range or a part id that is not a shard of the
// task are permanent errors. The handler is safe for concurrent use.
func Search(cat *catalog.Catalog) processor.Handler {
	return processor.HandlerFunc(func(_ context.Context, t schemas.Task) ([]byte, error) {
		if cat == nil {
			return nil, processor.Permanent(errors.New("search: no catalogue"))
		}
		req, err := parseSearchRequest(t.Payload)
		if err != nil {
			return nil, processor.Permanent(err)
		}
		shard, err := parseShard(t.PartID, t.PartCount)
		if err != nil {
			return nil, processor.Permanent(err)
		}
		hits := cat.Search(req.Query, req.K, shard, t.PartCount)
		if hits == nil {
			hits = []catalog.Hit{}
		}
		return json.Marshal(hits)
	})
}

func parseSearchRequest(payload []byte) (SearchRequest, error) {
	var req SearchRequest
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("search payload: want {\"query\":...,\"k\":...}: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, errors.New("search payload: data after the JSON object")
	}
	if strings.TrimSpace(req.Query) == "" {
		return req, errors.New("search payload: query is empty")
	}
	switch {
	case req.K == 0:
		req.K = DefaultSearchK
	case req.K < 0 || req.K > MaxSearchK:
		return req, fmt.Errorf("search payload: k %d is not in [1, %d]", req.K, MaxSearchK)
	}
	return req, nil
}

func parseShard(part schemas.PartID, count int) (int, error) {
	if count < 1 {
		return 0, fmt.Errorf("search: part count %d, want at least 1", count)
	}
	s, ok := strings.CutPrefix(string(part), "shard-")
	i, err := strconv.Atoi(s)
	if !ok || err != nil || strconv.Itoa(i) != s {
		return 0, fmt.Errorf("search: part id %q is not a shard (shard-<i>)", part)
	}
	if i < 0 || i >= count {
		return 0, fmt.Errorf("search: shard %d is not in [0, %d)", i, count)
	}
	return i, nil
}
