package control

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
)

// Client talks to the daemon over its control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the daemon listening on socket.
func NewClient(socket string) *Client {
	var d net.Dialer
	return &Client{socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Status lists the volumes.
func (c *Client) Status(ctx context.Context) (StatusReply, error) {
	var r StatusReply
	err := c.call(ctx, http.MethodGet, "/v1/status", nil, &r)
	return r, err
}

// Health asks whether the daemon answers.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, http.MethodGet, "/v1/health", nil, &h)
	return h, err
}

// Mount mounts the configured volume name.
func (c *Client) Mount(ctx context.Context, name string) (VolumeInfo, error) {
	var v VolumeInfo
	err := c.call(ctx, http.MethodPost, "/v1/mount", MountRequest{Name: name}, &v)
	return v, err
}

// Unmount unmounts a volume by name, or by mount point when the argument
// is an absolute path.
func (c *Client) Unmount(ctx context.Context, nameOrTarget string, lazy bool) error {
	req := UnmountRequest{Name: nameOrTarget, Lazy: lazy}
	if strings.HasPrefix(nameOrTarget, "/") {
		req = UnmountRequest{Target: nameOrTarget, Lazy: lazy}
	}
	return c.call(ctx, http.MethodPost, "/v1/unmount", req, nil)
}

// Reload makes the daemon read its configuration again.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	err := c.call(ctx, http.MethodPost, "/v1/reload", struct{}{}, &r)
	return r, err
}

// Metrics returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("control %s: reading /metrics: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &Error{Status: resp.StatusCode, Code: "internal", Message: fmt.Sprintf("/metrics: HTTP %d", resp.StatusCode)}
	}
	return string(b), nil
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://kmsagent"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no socket at %s)", ErrNotRunning, c.socket)
		}
		return nil, fmt.Errorf("control %s: %w", c.socket, err)
	}
	return resp, nil
}

// call does one request and decodes the answer into out (nil: ignore
// it), or the error answer into an *Error.
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control %s: reading the answer: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error *Error `json:"error"`
		}
		if json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Message == "" {
			return &Error{Status: resp.StatusCode, Code: "internal", Message: fmt.Sprintf("%s: HTTP %d without an error message", path, resp.StatusCode)}
		}
		eb.Error.Status = resp.StatusCode
		eb.Error.Message = oneLine(eb.Error.Message)
		return eb.Error
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control %s: answer to %s: %w", c.socket, path, err)
	}
	return nil
}
