package control

import (
	"context"
	"net"
	"net/http"

	"kmsagent/agent/tstest"
)

// clientAs is a Client whose connections are made with c.
func clientAs(path string, c *tstest.Creds) *Client {
	return &Client{socket: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return tstest.DialAs(path, c) },
	}}}
}
