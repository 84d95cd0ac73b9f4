package main

import (
	"errors"
	"fmt"
	"testing"

	"kmsagent/agent/service"
	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
	"kmsagent/kmsclient"
)

// TestAdvise: the libraries' typed errors get the command-line advice
// they carried before they stopped naming flags and commands, also when
// they crossed a worker's pipe, and keep their exit status.
func TestAdvise(t *testing.T) {
	keyDisabled := &kmsclient.Error{Provider: "local", Op: "decrypt", KeyID: "k", Kind: kmsclient.ErrKeyDisabled}
	tests := []struct {
		args []string
		err  error
		want string
		code int
	}{
		{[]string{"mount", "fuse"}, &envelope.NotShareError{Dir: "/c"}, "/c has no kmsagent.json: not a kmsagent share; run kmsagent format fuse /c --key-id ID", exitFailure},
		{nil, &share.MountedError{Path: "/p", CipherDir: "/c"}, "/p is already a kmsagent mount of /c; run kmsagent umount /p first", exitFailure},
		{nil, &share.NotEmptyError{Dir: "/c", First: "a"}, "/c is not empty (a, ...); format an empty directory, or pass --force to format it anyway (nothing in it is overwritten)", exitFailure},
		{nil, &share.BusyError{Mountpoint: "/p"}, "/p is busy: a process has files open there (see fuser -vm /p); close them, or use kmsagent umount --lazy", exitFailure},
		{[]string{"rewrap"}, fmt.Errorf("/d: %w", volume.ErrNotEnrolled), "/d: the volume has no kmsagent token; bind it with kmsagent enroll first", exitFailure},
		{[]string{"export-key"}, volume.ErrNotEnrolled, "the volume has no kmsagent token; bind it with kmsagent enroll, or open it with a passphrase", exitFailure},
		{[]string{"mount", "luks"}, &crypt.StepError{Step: crypt.StepKMS, Err: &worker.Error{Code: worker.CodeNotEnrolled, Message: "the volume has no kmsagent token"}},
			"KMS unwrap: the volume has no kmsagent token; bind it with kmsagent enroll, or open it with a passphrase", exitFailure},
		{nil, &crypt.AlreadyOpenError{Name: "v"}, "volume is already open as /dev/mapper/v (close it with kmsagent umount v)", exitFailure},
		{nil, &service.NotMountedError{Target: "/x"}, "/x is not a kmsagent mount or volume (see kmsagent status)", exitFailure},
		{nil, &service.OptionError{Option: "bogus", Known: []string{"ro", "rw"}}, "mount: unknown option -o bogus; known: ro, rw", exitUsage},
		{nil, fmt.Errorf("unwrap master key: %w", keyDisabled), "unwrap master key: local kms decrypt (key k): key disabled; enable the key (kmsagent kms enable-key, or the provider's console)", exitKey},
		{nil, &worker.Error{Code: worker.CodeKeyDisabled, Message: "unwrap master key: local kms decrypt (key k): key disabled; enable the key"},
			"unwrap master key: local kms decrypt (key k): key disabled; enable the key (kmsagent kms enable-key, or the provider's console)", exitKey},
		{nil, &service.SourceError{Source: "/d", Err: &volume.EnrolledError{TokenID: 0, KeyID: "k"}}, "/d: already enrolled (token 0, KMS key k); use kmsagent rewrap to change the KMS key, or kmsagent unenroll first", exitFailure},
		{nil, errors.New("plain"), "plain", exitFailure},
	}
	for _, tt := range tests {
		got := advise(tt.args, tt.err)
		if got.Error() != tt.want {
			t.Errorf("advise(%q)\n got %q\nwant %q", tt.err, got, tt.want)
		}
		if c := exitCode(got); c != tt.code {
			t.Errorf("advise(%q): exit %d, want %d", tt.err, c, tt.code)
		}
	}
}
