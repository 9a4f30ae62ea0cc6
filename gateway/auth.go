package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MinTokenLength is the shortest bearer token a token file may hold.
const MinTokenLength = 16

// authReload is how often, at most, the token file is read again, so that
// tokens can be rotated without a restart.
const authReload = time.Second

// tokens is the set of bearer tokens the gateway accepts, read from a file
// that may change while the gateway runs. Only SHA-256 digests are kept;
// a presented token is hashed and compared with every digest in constant
// time, so neither its length nor how much of it matches shows in the
// time of an answer. Tokens never reach a log or an error message. Safe
// for concurrent use.
type tokens struct {
	path string
	log  *slog.Logger

	set atomic.Pointer[[][sha256.Size]byte]
	// loaded is when the file was first read; it carries the monotonic
	// clock, so that a wall clock stepped back does not delay reloads.
	loaded time.Time
	// next is when to look at the file again, as time since loaded.
	next    atomic.Int64
	mu      sync.Mutex        // one reload at a time; guards lastErr and sum
	lastErr string            // the last reload error logged, so it is logged once
	sum     [sha256.Size]byte // of the file content the tokens were read from
}

// loadTokens reads the token file at path; it fails when the file cannot
// be read or holds no token or a malformed one.
func loadTokens(path string, log *slog.Logger) (*tokens, error) {
	t := &tokens{path: path, log: log, loaded: time.Now()}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth token file: %w", err)
	}
	set, err := parseTokens(path, b)
	if err != nil {
		return nil, err
	}
	t.set.Store(&set)
	t.sum = sha256.Sum256(b)
	t.next.Store(int64(authReload))
	return t, nil
}

// parseTokens parses b, the content of the token file at path: one token
// a line; blank lines and lines starting with # are skipped, spaces around
// a token are trimmed. A token is RFC 6750's b64token (A-Z a-z 0-9 - . _ ~
// + / then any '='), at least MinTokenLength long. Errors name the line,
// never the token.
func parseTokens(path string, b []byte) ([][sha256.Size]byte, error) {
	var (
		set  [][sha256.Size]byte
		errs []error
	)
	for i, line := range bytes.Split(b, []byte("\n")) {
		tok := bytes.TrimSpace(line)
		if len(tok) == 0 || tok[0] == '#' {
			continue
		}
		switch {
		case !isB64Token(tok):
			errs = append(errs, fmt.Errorf("line %d: a token may hold only A-Z a-z 0-9 - . _ ~ + / and trailing =", i+1))
		case len(tok) < MinTokenLength:
			errs = append(errs, fmt.Errorf("line %d: a token of %d characters, want at least %d (e.g. openssl rand -hex 32)", i+1, len(tok), MinTokenLength))
		default:
			set = append(set, sha256.Sum256(tok))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("auth token file %s: %w", path, errors.Join(errs...))
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("auth token file %s: no token in it (one a line; # starts a comment)", path)
	}
	return set, nil
}

// isB64Token reports whether tok is an RFC 6750 b64token.
func isB64Token(tok []byte) bool {
	i := 0
	for ; i < len(tok); i++ {
		c := tok[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(tok); i++ {
		if tok[i] != '=' {
			return false
		}
	}
	return true
}

// valid reports whether tok is one of the tokens.
func (t *tokens) valid(tok string) bool {
	t.maybeReload()
	sum := sha256.Sum256([]byte(tok))
	ok := 0
	for _, d := range *t.set.Load() {
		ok |= subtle.ConstantTimeCompare(sum[:], d[:])
	}
	return ok == 1
}

// maybeReload reads the file again when authReload has passed (on the
// monotonic clock) since the last time. A file that cannot be read, holds
// no valid token, or has changed and does not end with a newline keeps the
// tokens as they were, with a warning: a rotation that writes the file in
// place may be caught half-written, its last token cut short. Rotate by
// writing a new file and renaming it over the old one.
func (t *tokens) maybeReload() {
	since := int64(time.Since(t.loaded))
	next := t.next.Load()
	if since < next || !t.next.CompareAndSwap(next, since+int64(authReload)) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b, err := os.ReadFile(t.path)
	if err != nil {
		err = fmt.Errorf("auth token file: %w", err)
	}
	sum := sha256.Sum256(b)
	if err == nil && sum == t.sum {
		t.lastErr = ""
		return // unchanged
	}
	var set [][sha256.Size]byte
	switch {
	case err != nil:
	case len(b) > 0 && b[len(b)-1] != '\n':
		err = fmt.Errorf("auth token file %s: changed but does not end with a newline; it may be half-written "+
			"(rotate by writing a new file and renaming it over this one; end the last token with a newline)", t.path)
	default:
		set, err = parseTokens(t.path, b)
	}
	if err != nil {
		if msg := err.Error(); msg != t.lastErr {
			t.lastErr = msg
			t.log.Warn("auth token file not reloaded; the tokens read before stay valid", "err", err)
		}
		return
	}
	t.lastErr = ""
	t.sum = sum
	old := t.set.Swap(&set)
	if !sameDigests(*old, set) {
		t.log.Info("auth tokens reloaded", "file", t.path, "tokens", len(set), "before", len(*old))
	}
}

func sameDigests(a, b [][sha256.Size]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The WWW-Authenticate challenges of a 401 (RFC 6750 section 3).
const (
	challenge        = `Bearer realm="scattergather"`
	challengeInvalid = `Bearer realm="scattergather", error="invalid_token"`
)

// authorize checks r's bearer token when the gateway has tokens and, if it
// is missing or wrong, answers 401 and returns false.
func (g *Gateway) authorize(w http.ResponseWriter, r *http.Request) bool {
	if g.tokens == nil {
		return true
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	switch {
	case !strings.EqualFold(scheme, "Bearer") || tok == "":
		g.m.authFailures.WithLabelValues("missing").Inc()
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "this gateway needs an Authorization: Bearer <token> header")
		return false
	case !g.tokens.valid(tok):
		g.m.authFailures.WithLabelValues("invalid").Inc()
		w.Header().Set("WWW-Authenticate", challengeInvalid)
		writeError(w, http.StatusUnauthorized, CodeUnauthorized, "the bearer token is not one this gateway accepts")
		return false
	}
	return true
}
