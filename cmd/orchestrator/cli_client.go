package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/retrainhq/orchestrator/web/api"
)

// apiClient calls a running server's JSON API with the admin token.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// do sends a request with an optional JSON body and returns the status and body of a 2xx answer. Any other
// answer is an *api.Error carrying the server's message.
func (c *apiClient) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var reqBody io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("encode request: %w", err)
		}
		reqBody = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reqBody)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, c.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return 0, nil, fmt.Errorf("read the answer of %s %s: %w", method, c.base+path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, nil, &api.Error{Status: resp.StatusCode, Message: errorMessage(resp.StatusCode, data)}
	}
	return resp.StatusCode, data, nil
}

// transportError explains a request that got no answer, naming the server.
func (c *apiClient) transportError(err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot connect to %s (%w): is the server running? Point --server or ORCHESTRATOR_URL at it",
			c.base, syscall.ECONNREFUSED)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("no answer from %s within %s: %w", c.base, clientTimeout, err)
	}
	return fmt.Errorf("cannot reach %s (set --server or ORCHESTRATOR_URL): %w", c.base, err)
}

// errorMessage returns the message of an error answer, or a short form of whatever else it is.
func errorMessage(status int, body []byte) string {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	text := strings.TrimSpace(string(body))
	if text == "" || len(text) > 200 || strings.HasPrefix(text, "<") {
		return http.StatusText(status)
	}
	return text
}
