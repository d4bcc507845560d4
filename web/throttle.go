package web

import (
	"container/list"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/retrainhq/orchestrator/orchestrator"
)

// Throttling of failed admin authentications.
const (
	// throttleFreeFailures is how many failures a client has before it must wait.
	throttleFreeFailures = 5
	// throttleFirstDelay is the wait after the last free failure; it doubles with each further one.
	throttleFirstDelay = time.Second
	// throttleMaxDelay caps the wait.
	throttleMaxDelay = 15 * time.Minute
	// throttleQuiet is how long without a failure before a client's count is forgotten.
	throttleQuiet = 15 * time.Minute
	// throttleMaxClients bounds the memory: past it, the client that failed least recently is forgotten.
	throttleMaxClients = 10_000
)

// codeTooManyRequests is a web-only code: the client must wait before it tries the admin token again.
const codeTooManyRequests orchestrator.Code = "too_many_requests"

// authThrottle counts failed admin authentications per client address and makes a client that keeps failing
// wait, longer with each failure. Each client is counted on its own, so one never locks out another; a success
// or a quiet period forgets the count.
type authThrottle struct {
	now        func() time.Time
	maxClients int

	mu      sync.Mutex
	clients map[string]*list.Element // of *throttleEntry, in order of last failure, the latest at the front
	order   list.List
}

type throttleEntry struct {
	addr         string
	failures     int
	lastFailure  time.Time
	blockedUntil time.Time
}

func newAuthThrottle(now func() time.Time, maxClients int) *authThrottle {
	return &authThrottle{now: now, maxClients: maxClients, clients: map[string]*list.Element{}}
}

// wait returns how long addr must wait before its next try, 0 when it may try now.
func (t *authThrottle) wait(addr string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entry(addr, t.now())
	if e == nil {
		return 0
	}
	return max(0, e.blockedUntil.Sub(t.now()))
}

// fail counts a failure of addr.
func (t *authThrottle) fail(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	el, ok := t.clients[addr]
	if !ok || t.entry(addr, now) == nil {
		if t.order.Len() >= t.maxClients {
			oldest := t.order.Back()
			delete(t.clients, oldest.Value.(*throttleEntry).addr)
			t.order.Remove(oldest)
		}
		el = t.order.PushFront(&throttleEntry{addr: addr})
		t.clients[addr] = el
	}
	t.order.MoveToFront(el)
	e := el.Value.(*throttleEntry)
	e.failures++
	e.lastFailure = now
	if extra := e.failures - throttleFreeFailures; extra >= 0 {
		delay := throttleMaxDelay
		if extra < 20 {
			delay = min(throttleFirstDelay<<extra, throttleMaxDelay)
		}
		e.blockedUntil = now.Add(delay)
	}
}

// succeed forgets the failures of addr.
func (t *authThrottle) succeed(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forget(addr)
}

// entry returns the entry of addr, forgetting it first when it has been quiet long enough. The lock is held.
func (t *authThrottle) entry(addr string, now time.Time) *throttleEntry {
	el, ok := t.clients[addr]
	if !ok {
		return nil
	}
	e := el.Value.(*throttleEntry)
	if now.Sub(e.lastFailure) >= throttleQuiet {
		t.forget(addr)
		return nil
	}
	return e
}

func (t *authThrottle) forget(addr string) {
	if el, ok := t.clients[addr]; ok {
		t.order.Remove(el)
		delete(t.clients, addr)
	}
}

// len returns how many clients are tracked.
func (t *authThrottle) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// checkThrottle returns the 429 error for a client that must wait before trying the admin token again, with
// Retry-After set on w, or nil when it may try.
func (s *Server) checkThrottle(w http.ResponseWriter, addr string) error {
	wait := s.throttle.wait(addr)
	if wait <= 0 {
		return nil
	}
	s.metrics.authThrottled.Inc()
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return &orchestrator.Error{Code: codeTooManyRequests, Message: "too many wrong admin tokens from your address: " +
		"try again in " + strconv.Itoa(secs) + "s"}
}

// authFailed counts a wrong admin token from addr.
func (s *Server) authFailed(addr string) {
	s.metrics.authFailures.Inc()
	s.throttle.fail(addr)
}

// identifyThrottled is auth.identify with guessing throttled: a request that presents the token (Bearer or
// Basic) from a client that has failed too often gets the 429 error; a wrong one is counted, a right one forgets
// the client's failures. A request with only a session cookie is never throttled: a session cannot be guessed
// any faster than the token, and its holder must not be locked out by someone else at the same address.
func (s *Server) identifyThrottled(w http.ResponseWriter, r *http.Request) (authMethod, error) {
	if !presentsToken(r) {
		return s.auth.identify(r), nil
	}
	addr := s.clientAddr(r)
	if err := s.checkThrottle(w, addr); err != nil {
		return authNone, err
	}
	method := s.auth.identify(r)
	if method == authNone {
		s.authFailed(addr)
	} else {
		s.throttle.succeed(addr)
	}
	return method, nil
}

// presentsToken reports whether r carries the admin token in its Authorization header, as Bearer or Basic.
func presentsToken(r *http.Request) bool {
	if _, _, ok := r.BasicAuth(); ok {
		return true
	}
	h := r.Header.Get("Authorization")
	return len(h) > len("Bearer ") && h[:len("Bearer ")] == "Bearer "
}
