package hub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// How the listings (ListTree, ParentCommit) retry each request.
const (
	// rateLimitRetries is how many 429 answers in a row are waited out.
	rateLimitRetries = 5
	// rateLimitWaitDefault is the wait after a 429 without Retry-After.
	rateLimitWaitDefault = time.Second
	// rateLimitWaitMax is the longest Retry-After waited out; a longer one gives up at once.
	rateLimitWaitMax = time.Minute
	// failureTries is how many times in all a request is sent while it fails with a 5xx or no answer.
	failureTries = 3
)

// failureBackoff is the wait before the second and the third try of a failing request.
var failureBackoff = [failureTries - 1]time.Duration{time.Second, 2 * time.Second}

// errTooLarge says an answer is larger than bodyLimit.
var errTooLarge = fmt.Errorf("the answer is larger than %d bytes", bodyLimit)

// errPastDeadline says a wait would end after the context's deadline.
var errPastDeadline = errors.New("the wait would pass the deadline")

// getRetrying sends GET rawURL until it is answered 200, as the listings retry (see ListTree), and returns the
// body, of at most bodyLimit bytes, and the header of the answer.
func (c *Client) getRetrying(ctx context.Context, repo, rawURL string) ([]byte, http.Header, error) {
	return retrying(ctx, func() ([]byte, http.Header, error) { return c.getOK(ctx, repo, rawURL) })
}

// retrying calls try until it succeeds, as the listings retry (see ListTree): a 429 waited out, a 5xx or no
// answer tried again, anything else returned at once.
func retrying(ctx context.Context, try func() ([]byte, http.Header, error)) ([]byte, http.Header, error) {
	rateLimited, failures := 0, 0
	for {
		body, header, err := try()
		if err == nil {
			return body, header, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err // the caller's context ended: no more tries
		}
		var wait time.Duration
		var se *StatusError
		answered := errors.As(err, &se)
		switch {
		case errors.Is(err, errTooLarge):
			return nil, nil, err
		case answered && se.Status == http.StatusTooManyRequests:
			if rateLimited++; rateLimited > rateLimitRetries {
				return nil, nil, fmt.Errorf("still rate limited after %d waits: %w", rateLimitRetries, err)
			}
			if wait = cmp.Or(se.RetryAfter, rateLimitWaitDefault); wait > rateLimitWaitMax {
				return nil, nil, err
			}
		case answered && se.Status < 500:
			return nil, nil, err // 404 and other refusals: asking again changes nothing
		default: // a 5xx, or no answer
			if failures++; failures == failureTries {
				return nil, nil, fmt.Errorf("gave up after %d tries: %w", failureTries, err)
			}
			wait = failureBackoff[failures-1]
		}
		if werr := sleep(ctx, wait); errors.Is(werr, errPastDeadline) {
			return nil, nil, err
		} else if werr != nil {
			return nil, nil, fmt.Errorf("%w (stopped waiting to retry: %w)", err, werr)
		}
	}
}

// getOK sends GET rawURL once and returns the body and header of a 2xx answer; any other answer is an error
// wrapping a *StatusError.
func (c *Client) getOK(ctx context.Context, repo, rawURL string) ([]byte, http.Header, error) {
	return c.sendOK(ctx, "dataset "+repo, http.MethodGet, rawURL, nil)
}

// sendOK sends one request (see send) and returns the body and header of a 2xx answer; any other answer is an
// error wrapping a *StatusError.
func (c *Client) sendOK(ctx context.Context, what, method, rawURL string, reqBody []byte) ([]byte, http.Header, error) {
	resp, err := c.send(ctx, what, method, rawURL, reqBody)
	if err != nil {
		return nil, nil, err
	}
	defer drain(resp.Body)
	where := resp.Request.Method + " " + resp.Request.URL.Redacted()
	if resp.StatusCode/100 != 2 {
		return nil, nil, fmt.Errorf("%s: %w", where, statusError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, bodyLimit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: read the answer: %w", where, err)
	}
	if len(body) > bodyLimit {
		return nil, nil, fmt.Errorf("%s: %w", where, errTooLarge)
	}
	return body, resp.Header, nil
}

// sleep waits for d, or until ctx ends (its error), or not at all when d would pass ctx's deadline
// (errPastDeadline).
func sleep(ctx context.Context, d time.Duration) error {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return errPastDeadline
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
