package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"net/http"
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

// handleWebhook receives a Hugging Face webhook delivery.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) error {
	// 1. Authenticate before reading anything else: the header, or ?secret= when the header is absent or empty.
	given := r.Header.Get("X-Webhook-Secret")
	if given == "" {
		given = r.URL.Query().Get("secret")
	}
	if !secretMatches(given, s.secret) {
		return orchestrator.Errorf(orchestrator.CodeUnauthorized, "missing or wrong webhook secret")
	}

	// 2. Read a bounded body.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return orchestrator.Errorf(orchestrator.CodeTooLarge, "body larger than %d bytes", s.maxBody)
		}
		return orchestrator.WrapError(orchestrator.CodeInvalid, err, "could not read body")
	}

	// 3. Parse leniently, whatever the content type says.
	delivery, err := orchestrator.ParseDelivery(body)
	if err != nil {
		return err
	}

	// 4. Record it, decide, and enqueue, in one transaction.
	ctx, cancel := context.WithTimeout(r.Context(), webhookDBTimeout)
	defer cancel()
	res, err := s.store.DeliveryInsert(ctx, orchestrator.DeliveryInsertParams{
		Delivery: delivery, RemoteAddr: remoteHost(r),
	})
	if err != nil {
		return err
	}
	s.logger.InfoContext(r.Context(), "delivery recorded", "delivery_id", res.DeliveryID, "event", delivery.Event(),
		"repo", delivery.RepoName, "runs", res.RunIDs, "decisions", len(res.Decisions))

	// 5. Answer.
	writeJSON(w, http.StatusOK, webhookResponse{
		Received: true, Event: delivery.Event(), Repo: delivery.RepoName,
		DeliveryID: res.DeliveryID, Runs: res.RunIDs, Decisions: res.Decisions,
	})
	return nil
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
