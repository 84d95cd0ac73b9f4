package cryptkey

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"kmsagent/agent/audit"
	"kmsagent/blockdev/token"
	"kmsagent/kmsclient"
)

// TestDeliverer: with a Deliverer the server writes no key itself; the
// use is audited through approve before the deliverer writes, a failed
// audit record withholds the key, and a deliverer's error is audited as
// a refusal.
func TestDeliverer(t *testing.T) {
	cmk := token.KMS{Provider: "local", KeyID: "k1"}
	writeKey := DeliverFunc(func(_ context.Context, c *net.UnixConn, dev string, approve func(token.KMS) error) (token.KMS, error) {
		if err := approve(cmk); err != nil {
			return cmk, err
		}
		_, err := c.Write([]byte("key of " + dev))
		return cmk, err
	})
	tests := []struct {
		name     string
		deliver  Deliverer
		auditErr error
		want     string
		records  int
		result   string
	}{
		{name: "delivered", deliver: writeKey, want: "key of /dev/vdb", records: 1, result: audit.ResultOK},
		{name: "audit fails", deliver: writeKey, auditErr: errors.New("disk full"), records: 0},
		{
			name: "deliverer fails", records: 1, result: "key_disabled",
			deliver: DeliverFunc(func(context.Context, *net.UnixConn, string, func(token.KMS) error) (token.KMS, error) {
				return cmk, fmt.Errorf("unwrap: %w", kmsclient.ErrKeyDisabled)
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{err: tt.auditErr}
			path := serveTest(t, &Server{Lookup: mapLookup{"data": "/dev/vdb"}, Deliverer: tt.deliver, Audit: rec})
			got, err := readKey(path, "@ab/cryptsetup/data")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("client read %q, want %q", got, tt.want)
			}
			recs := rec.records()
			if len(recs) != tt.records {
				t.Fatalf("%d records, want %d: %+v", len(recs), tt.records, recs)
			}
			if tt.records == 1 {
				r := recs[0]
				if r.Result != tt.result || r.CMK != "k1" || r.Volume != "data" {
					t.Fatalf("record %+v, want result %s for data under k1", r, tt.result)
				}
			}
		})
	}
}
