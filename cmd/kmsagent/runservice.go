package main

import (
	"context"

	"kmsagent/agent/daemon"
	"kmsagent/agent/service"
)

// daemonService gives the daemon the volume service. The daemon keeps its
// own small copies of the service's types, so that its tests run against
// a fake without workers, device-mapper or a KMS.
type daemonService struct{ svc *service.Service }

func (d daemonService) Mount(ctx context.Context, spec daemon.Spec) (daemon.Mounted, error) {
	m, err := d.svc.Mount(ctx, service.Spec{
		Name:     spec.Name,
		Kind:     service.Kind(spec.Kind),
		Source:   spec.Source,
		Target:   spec.Target,
		FSType:   spec.FSType,
		Options:  spec.Options,
		ReadOnly: spec.ReadOnly,
	})
	if err != nil {
		// The CMK of a key use that failed, for the audit record.
		return daemon.Mounted{KeyID: m.KeyID, Provider: m.Provider}, err
	}
	return daemon.Mounted{
		Spec:      spec,
		WorkerPID: m.WorkerPID,
		Device:    m.Device,
		KeyID:     m.KeyID,
		Provider:  m.Provider,
		Since:     m.Since,
	}, nil
}

func (d daemonService) Unmount(ctx context.Context, target string, lazy bool) error {
	return d.svc.Unmount(ctx, target, lazy)
}

func (d daemonService) Status(ctx context.Context) ([]daemon.VolumeStatus, error) {
	vols, err := d.svc.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]daemon.VolumeStatus, 0, len(vols))
	for _, v := range vols {
		st := daemon.VolumeStatus{
			Name: v.Name, Source: v.Source, Target: v.Target,
			Kind: daemon.Kind(v.Kind), WorkerPID: v.WorkerPID,
			KeyID: v.KeyID, Provider: v.Provider, Device: v.Device,
			UnlockedBy: v.UnlockedBy, UnlockedAt: v.UnlockedAt,
		}
		switch v.State {
		case service.StateStale:
			st.State = daemon.ServiceStale
		case service.StateDetached, service.StateClosing:
			// Still in the kernel, but on its way out.
			st.State = daemon.ServiceDetached
		default:
			st.State = daemon.ServiceMounted
		}
		out = append(out, st)
	}
	return out, nil
}
