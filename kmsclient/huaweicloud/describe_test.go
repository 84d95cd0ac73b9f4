package huaweicloud

import (
	"errors"
	"testing"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/wire"
)

func TestDescribeKey(t *testing.T) {
	created := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC) // 1700000000
	deletion := time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC)
	tests := []struct {
		state, created, deletion string
		wantState                kmsclient.KeyState
		wantCreated, wantDeleted time.Time
	}{
		{wire.KeyStateEnabled, "1700000000000", "", kmsclient.KeyEnabled, created, time.Time{}},
		{wire.KeyStateEnabled, "1700000000", "", kmsclient.KeyEnabled, created, time.Time{}},
		{wire.KeyStateDisabled, "1700000000000", "", kmsclient.KeyDisabled, created, time.Time{}},
		{wire.KeyStatePendingDeletion, "1700000000000", "1704164645678", kmsclient.KeyPendingDeletion, created, deletion},
		{wire.KeyStatePendingImport, "", "", kmsclient.KeyPendingImport, time.Time{}, time.Time{}},
		{wire.KeyStatePendingActivation, "0", "-5", kmsclient.KeyUnavailable, time.Time{}, time.Time{}},
		{"6", "not a date", "1.5e12", kmsclient.KeyUnavailable, time.Time{}, time.Time{}},
		{"", "1700000000000", "", kmsclient.KeyUnavailable, created, time.Time{}},
	}
	f := newFakeKMS(t)
	c := newTestClient(t, staticConfig(t, f))
	for _, tc := range tests {
		t.Run("state "+tc.state, func(t *testing.T) {
			k := f.addKey(keyA)
			f.mu.Lock()
			k.state, k.created, k.deletion, k.alias = tc.state, tc.created, tc.deletion, "alias/vol"
			f.mu.Unlock()
			info, err := c.DescribeKey(t.Context(), keyA)
			if err != nil {
				t.Fatal(err)
			}
			want := kmsclient.KeyInfo{
				ID: keyA, Alias: "alias/vol", Description: "test key", State: tc.wantState,
				CreatedAt: tc.wantCreated, DeletionDate: tc.wantDeleted,
				Provider: "huaweicloud", Region: testRegion,
			}
			if *info != want {
				t.Fatalf("got  %+v\nwant %+v", *info, want)
			}
			if r := f.last(t); r.op != wire.OpDescribeKey || r.str("key_id") != keyA || len(r.body) != 1 {
				t.Fatalf("request %s %v", r.op, r.body)
			}
		})
	}
}

func TestDescribeKeyErrors(t *testing.T) {
	f := newFakeKMS(t)
	f.addKey(keyA)
	c := newTestClient(t, staticConfig(t, f))
	if _, err := c.DescribeKey(t.Context(), keyB); !errors.Is(err, kmsclient.ErrKeyNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	f.setMutate(func(op string, r map[string]any) { delete(r, "key_info") })
	if _, err := c.DescribeKey(t.Context(), keyA); !errors.Is(err, kmsclient.ErrUnavailable) {
		t.Fatalf("no key_info: %v", err)
	}
	f.setMutate(func(op string, r map[string]any) { r["key_info"] = "x" })
	if _, err := c.DescribeKey(t.Context(), keyA); !errors.Is(err, kmsclient.ErrUnavailable) {
		t.Fatalf("bad key_info: %v", err)
	}
}

func TestParseEpoch(t *testing.T) {
	for in, want := range map[string]time.Time{
		"1502799822000": time.UnixMilli(1502799822000).UTC(),
		"1502799822":    time.Unix(1502799822, 0).UTC(),
		"99999999999":   time.Unix(99999999999, 0).UTC(),
		"100000000000":  time.UnixMilli(100000000000).UTC(),
		"":              {},
		"0":             {},
		"-1":            {},
		"12abc":         {},
	} {
		if got := parseEpoch(in); !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("parseEpoch(%q) = %v, want %v", in, got, want)
		}
	}
}
