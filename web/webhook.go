package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// webhookDBTimeout bounds the database work of one delivery, well inside the 30 s the Hub waits, so that an
// unreachable database is answered with 503 (and retried by the Hub) rather than a timeout.
const webhookDBTimeout = 5 * time.Second

// webhookResponse is the answer to an accepted delivery.
type webhookResponse struct {
	Received   bool                    `json:"received"`
	Event      string                  `json:"event"`
	Repo       string                  `json:"repo"`
	DeliveryID int64                   `json:"delivery_id"`
	Runs       []int64                 `json:"runs"`
	Decisions  []orchestrator.Decision `json:"decisions"`
}

// handleWebhook receives a Hugging Face webhook delivery, and counts its outcome.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	outcome, err := s.receiveDelivery(w, r, start)
	s.metrics.deliveries.WithLabelValues(string(outcome)).Inc()
	s.metrics.webhookDuration.Observe(time.Since(start).Seconds())
	return err
}

// receiveDelivery does the work of handleWebhook and says what came of it.
func (s *Server) receiveDelivery(w http.ResponseWriter, r *http.Request, start time.Time) (deliveryOutcome, error) {
	// 1. Authenticate before reading anything else: the header, or ?secret= when the header is absent or empty.
	given := r.Header.Get("X-Webhook-Secret")
	if given == "" {
		given = r.URL.Query().Get("secret")
	}
	// Both secrets are always compared, so the time taken does not tell which one was close.
	current, previous := secretMatches(given, s.secret), secretMatches(given, s.previousSecret)
	if !current && !previous {
		refuseUnread(w, r)
		s.metrics.secretFailures.Inc()
		s.secretFailures.add(time.Now(), s.clientAddr(r))
		return outcomeUnauthorized, orchestrator.Errorf(orchestrator.CodeUnauthorized, "missing or wrong webhook secret")
	}
	secret := orchestrator.SecretCurrent
	if !current {
		secret = orchestrator.SecretPrevious
		s.metrics.previousSecret.Inc()
	}

	// 2. Read a bounded body: one announced as too large is refused before any of it is read.
	if r.ContentLength > s.maxBody {
		refuseUnread(w, r)
		return outcomeTooLarge, orchestrator.Errorf(orchestrator.CodeTooLarge, "body larger than %d bytes", s.maxBody)
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, s.maxBody), r.ContentLength, s.maxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return outcomeTooLarge, orchestrator.Errorf(orchestrator.CodeTooLarge, "body larger than %d bytes", s.maxBody)
		}
		// The reason (a timeout, a reset) names our socket: it goes to the log, not to the client.
		s.logger.InfoContext(r.Context(), "could not read a webhook body", "error", err)
		return outcomeInvalid, orchestrator.Errorf(orchestrator.CodeInvalid,
			"could not read the body: the client was too slow or closed the connection")
	}

	// 3. Parse leniently, whatever the content type says.
	delivery, err := orchestrator.ParseDelivery(body)
	if err != nil {
		return outcomeInvalid, err
	}

	// 4. Record it, decide, and enqueue, in one transaction.
	ctx, cancel := context.WithTimeout(r.Context(), webhookDBTimeout)
	defer cancel()
	ctx, span := s.startDeliverySpan(ctx, delivery)
	res, err := s.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{
		Delivery: delivery, RemoteAddr: s.clientAddr(r), Secret: secret,
	})
	endDeliverySpan(span, res, err)
	if err != nil {
		return outcomeUnavailable, err
	}
	outcome := outcomeIgnored
	for _, d := range res.Decisions {
		if d.Decision == orchestrator.DecisionDuplicate {
			outcome = outcomeDuplicate
		}
	}
	if len(res.RunIDs) > 0 {
		outcome = outcomeAccepted
	}
	if outcome == outcomeIgnored && len(res.Decisions) > 0 && res.Decisions[0].Cause != "" {
		s.metrics.ignored.WithLabelValues(string(res.Decisions[0].Cause)).Inc()
	}
	s.logger.InfoContext(r.Context(), "delivery recorded", "delivery_id", res.DeliveryID, "event", delivery.Event(),
		"repo", delivery.RepoName, "outcome", outcome, "runs", res.RunIDs, "decisions", len(res.Decisions),
		"secret", secret, "duration", time.Since(start).Round(time.Microsecond))

	// 5. Answer.
	writeJSON(w, http.StatusOK, webhookResponse{
		Received: true, Event: delivery.Event(), Repo: delivery.RepoName,
		DeliveryID: res.DeliveryID, Runs: res.RunIDs, Decisions: res.Decisions,
	})
	return outcome, nil
}

// refuseUnread has the connection closed after the answer to a request whose body is refused unread: net/http
// would otherwise read up to 256 KiB more of it before answering, to keep the connection for another request.
func refuseUnread(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// readBody reads body to its end into one buffer. The buffer has the announced length (plus the byte that
// shows the end) when the request gives one, as the Hub does, so that a large body is allocated once rather
// than copied at every growth; without one it doubles, up to just over limit, the most body lets through.
func readBody(body io.Reader, contentLength, limit int64) ([]byte, error) {
	size := int64(512)
	if contentLength >= 0 {
		size = min(contentLength, limit) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			room := max(1, min(int64(cap(buf)), limit+1-int64(len(buf))))
			buf = slices.Grow(buf, int(room))
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// secretMatches compares a given secret with the configured one in constant time, also when their lengths
// differ: both are hashed first, so the comparison always covers 32 bytes.
func secretMatches(given string, want []byte) bool {
	if given == "" || len(want) == 0 {
		return false
	}
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// remoteHost returns the address of the peer, without its port.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
