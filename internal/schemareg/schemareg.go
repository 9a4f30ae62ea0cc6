// Package schemareg switches the pipeline's records to the Confluent wire
// format with a schema registry.
//
// Our records are Avro single-object encoded (schemas/): the magic bytes C3 01,
// the 8-byte little-endian CRC-64-AVRO fingerprint of the writer's schema,
// then the Avro binary body. The Confluent wire format is a zero byte, the
// 4-byte big-endian id the registry gave the writer's schema, then the same
// body. Registry mode is therefore a header swap at the Kafka client
// boundary: [New] registers the schema of every pipeline record kind under
// its record's full name (RecordNameStrategy: one topic holds several kinds,
// such as results holding manifests and results) and caches the ids; the
// hook of [Registry.Hooks] rewrites each produced record of a kind we
// registered from single-object to Confluent, and each fetched Confluent
// record whose id it knows back to single-object, before any role sees it.
//
// A fetched record with a schema id the registry did not list at start
// (another producer registered its schema later, e.g. an older release
// still running during a rolling upgrade) is looked up by id once: if the
// schemas package knows that schema's fingerprint, the id is learned and
// the record read. Otherwise the record is left as it is: the role's
// decoder rejects it as not-avro and dead-letters it with that reason. An
// id that failed is not looked up again for [RetryUnknownAfter], while the
// registry does not answer no id is, and there are at most
// [MaxLookupsPerSecond] lookups a second. Single-object records fetched in registry mode are
// also left as they are, so producers that do not use the registry still
// work. The aggregator's state changelog is internal and stays
// single-object.
package schemareg

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/scattergather/scattergather/schemas"
)

// Kinds are the record kinds that travel in the Confluent wire format in
// registry mode: every kind on a pipeline topic. The aggregator's state
// changelog (schemas.KindAggregationState) is not among them.
var Kinds = []schemas.Kind{schemas.KindRequest, schemas.KindTask, schemas.KindManifest, schemas.KindResult, schemas.KindReply}

// DefaultTimeout bounds each HTTP request to the registry at start.
const DefaultTimeout = 10 * time.Second

// LookupTimeout bounds the lookup of an unknown schema id. It runs in the
// Kafka client's fetch path, so it is short.
const LookupTimeout = 2 * time.Second

// RetryUnknownAfter is how long a schema id whose lookup failed (not
// found, e.g. on a registry follower that has not replicated it yet, or a
// schema the schemas package does not know) is not looked up again, and
// how long no id is after the registry failed to answer.
const RetryUnknownAfter = 5 * time.Second

// MaxLookupsPerSecond caps the lookups of unknown ids: a stream of records
// with garbage ids costs at most this many registry requests (and
// warnings) a second. Records over the cap are left as they are.
const MaxLookupsPerSecond = 10

// maxFailedIDs caps the failed ids remembered: a stream of garbage ids
// must not grow memory without bound.
const maxFailedIDs = 10000

// Config is how to reach the registry.
type Config struct {
	// URL is the registry's base URL, e.g. http://registry:8081.
	URL string
	// User and Password, when User is set, are sent as HTTP basic auth.
	User     string
	Password string
	// Timeout bounds each HTTP request; zero takes DefaultTimeout.
	Timeout time.Duration
	// Logger receives one line per registered subject; nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: none given"))
	} else if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("url %q: want http:// or https://", c.URL))
	}
	if c.Password != "" && c.User == "" {
		errs = append(errs, errors.New("password given without a user"))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v: must not be negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// Registry holds the schema ids of our record kinds. It is safe for
// concurrent use.
type Registry struct {
	url string
	cl  *sr.Client
	log *slog.Logger
	// ids is the id each kind's current schema is registered under.
	ids map[schemas.Kind]int
	// toID maps a single-object fingerprint to the Confluent id to write.
	// Both are fixed after New.
	toID map[uint64]uint32

	mu sync.RWMutex
	// toHeader maps a Confluent id to the single-object header to read it
	// with: magic plus a fingerprint the schemas package knows. Ids looked
	// up after New are added.
	toHeader map[uint32][]byte

	// lookupMu serialises lookups of unknown ids and guards what follows.
	lookupMu sync.Mutex
	failed   map[uint32]time.Time // ids whose lookup failed, and when
	down     time.Time            // when the registry last failed to answer
	second   time.Time            // start of the current second of lookups
	lookups  int                  // lookups in that second
	now      func() time.Time
}

// New registers the schema of each of Kinds under its subject (a no-op for a
// schema the registry already has) and lists every version of each subject,
// so that records written with an earlier registered schema are read too if
// the schemas package knows that schema's fingerprint. An unreachable or
// refusing registry is an error naming its URL.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("schema registry: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	opts := []sr.ClientOpt{sr.URLs(cfg.URL), sr.HTTPClient(&http.Client{Timeout: timeout}), sr.UserAgent("scattergather")}
	if cfg.User != "" {
		opts = append(opts, sr.BasicAuth(cfg.User, cfg.Password))
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", cfg.URL, err)
	}
	r := &Registry{url: cfg.URL, cl: cl, log: log, ids: map[schemas.Kind]int{}, toID: map[uint64]uint32{},
		toHeader: map[uint32][]byte{}, failed: map[uint32]time.Time{}, now: time.Now}
	for _, k := range Kinds {
		if err := r.register(ctx, cl, k, log); err != nil {
			return nil, fmt.Errorf("schema registry %s: %w", cfg.URL, err)
		}
	}
	return r, nil
}

func (r *Registry) register(ctx context.Context, cl *sr.Client, k schemas.Kind, log *slog.Logger) error {
	src, err := schemas.Schema(k)
	if err != nil {
		return err
	}
	subject, err := Subject(src)
	if err != nil {
		return fmt.Errorf("schema %s: %w", k, err)
	}
	fp, err := schemas.Fingerprint(k)
	if err != nil {
		return err
	}
	id, err := cl.RegisterSchema(ctx, subject, sr.Schema{Schema: src, Type: sr.TypeAvro}, -1, -1)
	if err != nil {
		return fmt.Errorf("register subject %s: %w", subject, httpError(err))
	}
	if id <= 0 || int64(id) > int64(^uint32(0)>>1) {
		return fmt.Errorf("register subject %s: registry returned id %d", subject, id)
	}
	r.ids[k] = id
	r.toID[fp] = uint32(id)
	r.toHeader[uint32(id)] = singleObjectHeader(fp)

	versions, err := cl.Schemas(ctx, subject)
	if err != nil {
		return fmt.Errorf("list versions of subject %s: %w", subject, httpError(err))
	}
	known := 1
	for _, v := range versions {
		if v.ID == id || v.ID <= 0 {
			continue
		}
		h, err := readableHeader(v.Schema.Schema)
		if err != nil {
			log.Warn("schema registry: skipping unparsable version", "subject", subject, "version", v.Version, "id", v.ID, "err", err)
			continue
		}
		if got, err := schemas.KindOf(h); err != nil || got != k {
			continue // a schema the schemas package does not know
		}
		r.toHeader[uint32(v.ID)] = h
		if fp := binary.LittleEndian.Uint64(h[2:]); r.toID[fp] == 0 {
			r.toID[fp] = uint32(v.ID)
		}
		known++
	}
	log.Info("schema registered", "kind", k, "subject", subject, "id", id, "versions", len(versions), "readable_versions", known)
	return nil
}

// readableHeader returns the single-object header of the Avro schema src:
// goavro's Rabin fingerprint of it, which is one of those the schemas
// package maps to a kind (see its codec.go) when it knows the schema.
func readableHeader(src string) ([]byte, error) {
	c, err := goavro.NewCodec(src)
	if err != nil {
		return nil, err
	}
	return singleObjectHeader(uint64(c.Rabin)), nil
}

// lookup asks the registry for the schema of an id we do not know and
// returns the single-object header to read its records with, if the
// schemas package knows that schema. Failed ids are not asked again for
// RetryUnknownAfter, and no id is while the registry is not answering.
func (r *Registry) lookup(id uint32) ([]byte, bool) {
	r.lookupMu.Lock()
	defer r.lookupMu.Unlock()
	r.mu.RLock()
	h, ok := r.toHeader[id] // learned while this call waited
	r.mu.RUnlock()
	if ok {
		return h, true
	}
	now := r.now()
	if at, ok := r.failed[id]; ok && now.Sub(at) < RetryUnknownAfter {
		return nil, false
	}
	if !r.down.IsZero() && now.Sub(r.down) < RetryUnknownAfter {
		return nil, false
	}
	if now.Sub(r.second) >= time.Second {
		r.second, r.lookups = now, 0
	}
	if r.lookups >= MaxLookupsPerSecond {
		return nil, false // not remembered as failed: asked again later
	}
	r.lookups++
	fail := func(reason string, args ...any) ([]byte, bool) {
		if len(r.failed) >= maxFailedIDs {
			clear(r.failed)
		}
		r.failed[id] = now
		r.log.Warn("schema registry: records with this schema id cannot be read; they are dead-lettered as not-avro",
			append([]any{"id", id, "reason", reason}, args...)...)
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), LookupTimeout)
	defer cancel()
	sch, err := r.cl.SchemaByID(ctx, int(id))
	if err != nil {
		if re, ok := errors.AsType[*sr.ResponseError](err); ok && re.StatusCode == http.StatusNotFound {
			return fail("the registry does not have it")
		}
		r.down = now
		r.log.Warn("schema registry: looking up an unknown schema id failed; no id is looked up for a while",
			"url", r.url, "id", id, "err", httpError(err), "retry_after", RetryUnknownAfter)
		return nil, false
	}
	h, err = readableHeader(sch.Schema)
	if err != nil {
		return fail("its schema does not parse", "err", err)
	}
	k, err := schemas.KindOf(h)
	if err != nil {
		return fail("the schemas package does not know its schema (a newer release's?)")
	}
	r.mu.Lock()
	r.toHeader[id] = h
	r.mu.Unlock()
	r.log.Info("schema registry: learned a schema id registered after start", "id", id, "kind", k)
	return h, true
}

// httpError adds the HTTP status to the registry's error message.
func httpError(err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d: %w", re.StatusCode, err)
	}
	return err
}

// Subject is the RecordNameStrategy subject of an Avro record schema: its
// full name, namespace.name.
func Subject(src string) (string, error) {
	var s struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if err := json.Unmarshal([]byte(src), &s); err != nil {
		return "", fmt.Errorf("subject: %w", err)
	}
	if s.Name == "" {
		return "", errors.New("subject: schema has no name")
	}
	if s.Namespace == "" || strings.Contains(s.Name, ".") {
		return s.Name, nil
	}
	return s.Namespace + "." + s.Name, nil
}

// ID returns the id kind k's current schema is registered under.
func (r *Registry) ID(k schemas.Kind) (int, bool) {
	id, ok := r.ids[k]
	return id, ok
}

// URL returns the registry's URL.
func (r *Registry) URL() string { return r.url }

// Hooks returns the kgo hooks that swap the headers: attach them to every
// client of a role (kafkaconfig.Client.Hooks). They hold no state beyond the
// Registry's maps and may be shared by any number of clients.
func (r *Registry) Hooks() []kgo.Hook { return []kgo.Hook{hook{r}} }

const (
	singleObjectLen = 10 // C3 01 + 8-byte fingerprint
	confluentLen    = 5  // 00 + 4-byte id
)

func singleObjectHeader(fp uint64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{0xC3, 0x01}, fp)
}

// ToConfluent returns v in the Confluent wire format if it is a
// single-object record of a registered schema; otherwise it returns v and
// false. v is not modified: the result is a new slice.
func (r *Registry) ToConfluent(v []byte) ([]byte, bool) {
	if len(v) < singleObjectLen || v[0] != 0xC3 || v[1] != 0x01 {
		return v, false
	}
	id, ok := r.toID[binary.LittleEndian.Uint64(v[2:singleObjectLen])]
	if !ok {
		return v, false
	}
	out := make([]byte, confluentLen, confluentLen+len(v)-singleObjectLen)
	binary.BigEndian.PutUint32(out[1:], id)
	return append(out, v[singleObjectLen:]...), true
}

// FromConfluent returns v as a single-object record if it is in the
// Confluent wire format with a schema id we know or can look up (see the
// package doc); otherwise it returns v and false. v is not modified: the result is a new slice.
func (r *Registry) FromConfluent(v []byte) ([]byte, bool) {
	if len(v) < confluentLen || v[0] != 0 {
		return v, false
	}
	id := binary.BigEndian.Uint32(v[1:confluentLen])
	r.mu.RLock()
	h, ok := r.toHeader[id]
	r.mu.RUnlock()
	if !ok {
		if h, ok = r.lookup(id); !ok {
			return v, false
		}
	}
	out := make([]byte, 0, len(h)+len(v)-confluentLen)
	out = append(out, h...)
	return append(out, v[confluentLen:]...), true
}

// hook rewrites record values as they enter the producer's buffer and as
// fetched records are buffered for polling. kgo documents
// HookProduceRecordBuffered as the place for interceptors that modify a
// record's value before it is produced (it runs in Produce, before the
// record's size is taken), and calls HookFetchRecordBuffered on each fetched
// record before it can be polled.
type hook struct{ r *Registry }

var (
	_ kgo.HookProduceRecordBuffered = hook{}
	_ kgo.HookFetchRecordBuffered   = hook{}
)

func (h hook) OnProduceRecordBuffered(rec *kgo.Record) {
	if v, ok := h.r.ToConfluent(rec.Value); ok {
		rec.Value = v
	}
}

func (h hook) OnFetchRecordBuffered(rec *kgo.Record) {
	if v, ok := h.r.FromConfluent(rec.Value); ok {
		rec.Value = v
	}
}
