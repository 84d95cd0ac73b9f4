package daemon

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"kmsagent/agent/audit"
	"kmsagent/agent/config"
)

// TestAdoptFromInitramfs: a root volume the initramfs unlocked is adopted
// as mounted, dated from the unlock, shown as unlocked by the initramfs,
// and its key use is audited once per boot: not again by a daemon
// restarted in the same boot, again in the next boot.
func TestAdoptFromInitramfs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := config.Volume{Name: "root_crypt", Type: config.VolumeLUKS, Source: "UUID=0b7a3c4e-1111-4222-8333-944455556666", Target: "/", Auto: true}
		unlocked := time.Now().Add(-time.Minute)
		svc := newFake()
		svc.external = []VolumeStatus{
			{Name: "root_crypt", Kind: KindLUKS, Source: "/dev/vda2", Target: "/", State: ServiceMounted, Device: "/dev/mapper/root_crypt",
				KeyID: "cmk-root", Provider: "huaweicloud", UnlockedBy: "initramfs", UnlockedAt: unlocked},
			{Name: "data_crypt", Kind: KindLUKS, Source: "/dev/vdb", Target: "/data", State: ServiceMounted, Device: "/dev/mapper/data_crypt",
				KeyID: "cmk-data", Provider: "huaweicloud", UnlockedBy: "cryptsetup"},
		}
		st := &fakeState{}
		aud := &fakeAudit{}
		l, path := openAuditLog(t)
		boot := func() {
			t.Helper()
			d := New(cfgWith(root), Options{Service: svc, State: st, Audit: teeAudit{aud, AuditLog{Log: l}}})
			stop := started(t, d)
			defer stop()
			if n := svc.ncalls("root_crypt"); n != 0 {
				t.Fatalf("root_crypt mounted %d times; it was open already", n)
			}
			r := stateOf(t, d, "root_crypt")
			if r.State != StateMounted || !r.Adopted || r.UnlockedBy != "initramfs" || r.KeyID != "cmk-root" || !r.Since.Equal(unlocked) {
				t.Errorf("root_crypt: %+v", r)
			}
			if o := stateOf(t, d, "data_crypt"); o.Managed || o.State != StateMounted || o.UnlockedBy != "cryptsetup" {
				t.Errorf("data_crypt: %+v", o)
			}
		}
		wantAudits := func(n int) {
			t.Helper()
			aud.mu.Lock()
			defer aud.mu.Unlock()
			if len(aud.events) != n {
				t.Fatalf("%d audit events, want %d: %+v", len(aud.events), n, aud.events)
			}
			e := aud.events[n-1]
			if e.Actor != "initramfs" || e.Op != OpMount || e.Volume != "root_crypt" || e.KeyID != "cmk-root" || e.Err != nil {
				t.Errorf("audit event %+v", e)
			}
		}
		boot()
		wantAudits(1)
		boot() // the daemon restarted in the same boot
		wantAudits(1)
		time.Sleep(time.Hour) // the next boot's initramfs unlocks it again
		unlocked = time.Now()
		svc.mu.Lock()
		svc.external[0].UnlockedAt = unlocked
		svc.mu.Unlock()
		boot()
		wantAudits(2)

		res, err := audit.ReadFiles(path)
		if err != nil || len(res.Damaged) != 0 || len(res.Records) != 2 {
			t.Fatalf("audit log: %v %+v", err, res)
		}
		for _, r := range res.Records {
			if r.UID != 0 || r.PID != 0 || r.Comm != "initramfs" || r.Volume != "root_crypt" || r.CMK != "cmk-root" || r.Op != audit.OpUnwrap || r.Result != audit.ResultOK {
				t.Errorf("audit record %+v", r)
			}
		}
	})
}

// teeAudit writes to both.
type teeAudit struct{ a, b Auditor }

func (t teeAudit) Audit(ctx context.Context, e Event) error {
	if err := t.a.Audit(ctx, e); err != nil {
		return err
	}
	return t.b.Audit(ctx, e)
}
