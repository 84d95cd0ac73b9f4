package huaweicloud

import (
	"context"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient/huaweicloud/signer"
)

// credentialSource hands out the credential to sign the next request.
// Failures are *credError so the client can report them under the KMS
// operation that needed them.
type credentialSource interface {
	credentials(ctx context.Context) (*credential, error)
}

// credential is an AK/SK, and for temporary credentials a security token
// and an expiry. creds.SecretKey points into sk's locked mapping, which is
// unmapped once sk is unreachable; a user keeps the *credential alive
// (runtime.KeepAlive) until it has signed, because a refresh may drop the
// last other reference meanwhile.
type credential struct {
	creds   signer.Credentials
	sk      *secret.Key
	expires time.Time // zero for long-term credentials
}

type credError struct {
	kind error  // a kmsclient.Err* kind
	msg  string // what went wrong, one line
	err  error  // cause, may be nil
}

func (e *credError) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *credError) Unwrap() error { return e.err }

// staticCredentials is a long-term AK/SK. The SK stays in locked memory for
// the life of the client.
type staticCredentials struct {
	cred *credential
}

func newStaticCredentials(accessKey string, sk *secret.Key) *staticCredentials {
	return &staticCredentials{cred: &credential{
		creds: signer.Credentials{AccessKey: accessKey, SecretKey: sk.Bytes()},
		sk:    sk,
	}}
}

func (s *staticCredentials) credentials(context.Context) (*credential, error) {
	return s.cred, nil
}
