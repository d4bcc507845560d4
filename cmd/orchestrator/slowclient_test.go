package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/retrainhq/orchestrator/orchestrator/service"
)

// slowCloseMargin is how long after its timeout the server may take to close a slow connection.
const slowCloseMargin = 3 * time.Second

// slowConn is a client that sends the start of a request, then one byte per second, and notes when the server
// closes the connection.
type slowConn struct {
	conn   net.Conn
	opened time.Time
	closed chan struct{} // closed when a read from the server ends
	mu     sync.Mutex
	got    bytes.Buffer // what the server sent before closing
	end    time.Time
}

// openSlow dials addr, writes head at once and then one byte of trickle per second until the server closes the
// connection or the test ends.
func openSlow(t *testing.T, addr, head string, trickle byte) *slowConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	c := &slowConn{conn: conn, opened: time.Now(), closed: make(chan struct{})}
	_, err = io.WriteString(conn, head)
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		_ = conn.Close()
		wg.Wait()
	})
	wg.Go(func() {
		defer close(c.closed)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			c.mu.Lock()
			c.got.Write(buf[:n])
			if err != nil {
				c.end = time.Now()
			}
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-c.closed:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte{trickle}); err != nil {
					return
				}
			}
		}
	})
	return c
}

// isOpen reports whether the server has not closed the connection yet.
func (c *slowConn) isOpen() bool {
	select {
	case <-c.closed:
		return false
	default:
		return true
	}
}

// waitClosed waits up to limit after the connection was opened for the server to close it, and returns how long
// after opening that was and what the server sent.
func (c *slowConn) waitClosed(t *testing.T, limit time.Duration) (time.Duration, string) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(time.Until(c.opened.Add(limit))):
		t.Fatalf("the server still holds a slow connection %s after it was opened", limit)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.end.Sub(c.opened), c.got.String()
}

// slowlorisHead is the start of a request whose headers never end.
const slowlorisHead = "POST /webhooks/huggingface HTTP/1.1\r\nHost: x\r\nX-Slow: "

// TestSlowClients holds connections open with requests that arrive a byte per second: the server closes them
// after its read timeouts (service.ReadHeaderTimeout and service.ReadTimeout), stores nothing from them, and keeps
// answering other clients meanwhile.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	m := startWithMappings(t, `
mappings:
  - name: slow
    dataset: acme/slow
    command: ["true"]
`)
	addr, base := m.Addr(), "http://"+m.Addr()

	t.Run("Group", func(t *testing.T) {
		t.Run("SlowlorisClosedAfterReadHeaderTimeout", func(t *testing.T) {
			t.Parallel()
			c := openSlow(t, addr, slowlorisHead, 'a')
			took, got := c.waitClosed(t, service.ReadHeaderTimeout+slowCloseMargin)
			t.Logf("closed %s after opening (ReadHeaderTimeout %s); the server sent %q", took.Round(time.Millisecond), service.ReadHeaderTimeout, got)
			require.GreaterOrEqual(t, took, service.ReadHeaderTimeout-500*time.Millisecond, "closed by the header timeout, not before")
			require.Empty(t, got, "no request was read, so nothing is answered")
		})

		t.Run("DeliveryAnsweredWhileFiftySlowlorisAreOpen", func(t *testing.T) {
			t.Parallel()
			conns := make([]*slowConn, 50)
			for i := range conns {
				conns[i] = openSlow(t, addr, slowlorisHead, 'b')
			}
			time.Sleep(1500 * time.Millisecond) // every connection has trickled a byte

			start := time.Now()
			res := postDelivery(t, base, push("acme/slow", strings.Repeat("5", 40)))
			took := time.Since(start)
			t.Logf("delivery answered in %s with 50 slowloris connections open", took.Round(time.Millisecond))
			require.Len(t, res["runs"], 1)
			require.Less(t, took, 2*time.Second)
			for i, c := range conns {
				require.True(t, c.isOpen(), "slowloris %d was closed before its timeout", i)
			}
			resp, err := http.Get(base + "/healthz")
			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusOK, resp.StatusCode)

			for i, c := range conns {
				took, _ := c.waitClosed(t, service.ReadHeaderTimeout+slowCloseMargin)
				require.GreaterOrEqual(t, took, service.ReadHeaderTimeout-500*time.Millisecond, "slowloris %d", i)
			}
		})

		// Headers complete, body a byte per second: the whole request is cut at ReadTimeout.
		t.Run("SlowBodyCutAfterReadTimeout", func(t *testing.T) {
			t.Parallel()
			body := push("acme/slow", strings.Repeat("6", 40))
			head := "POST /webhooks/huggingface HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret: " + e2eSecret +
				"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body[:10]
			c := openSlow(t, addr, head, ' ')
			took, got := c.waitClosed(t, service.ReadTimeout+slowCloseMargin)
			t.Logf("closed %s after opening (ReadTimeout %s); the server sent %q", took.Round(time.Millisecond), service.ReadTimeout, got)
			require.GreaterOrEqual(t, took, service.ReadTimeout-500*time.Millisecond, "cut by the read timeout, not before")
			if got != "" {
				require.True(t, strings.HasPrefix(got, "HTTP/1.1 4"), "a slow body is the client's fault: %q", got)
				require.NotContains(t, got, m.Addr(), "the answer does not show the server's socket addresses")
			}
		})
	})

	var deliveries int
	require.NoError(t, m.Pool().QueryRow(context.Background(), `SELECT count(*) FROM deliveries`).Scan(&deliveries))
	require.Equal(t, 1, deliveries, "only the normal delivery was stored")
}
