package kmsserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"kmsagent/kmsclient/huaweicloud/wire"
)

type requestIDKey struct{}

// withRequestID gives every answer, errors included, an X-Request-Id, as
// the service does, so a client can quote it in its errors and an admin
// can find the server's log line for it. The id is the server's own: one
// a client sends is not trusted into the log.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		w.Header().Set(wire.HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// requestID is the id withRequestID gave the request, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// newRequestID returns 32 hex digits, the form the service uses.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}
