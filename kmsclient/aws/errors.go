package aws

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"kmsagent/kmsclient"
)

// codeInvalidState is the code KMS answers a cryptographic call with when
// the key is in a state that forbids it, see refineInvalidState.
const codeInvalidState = "KMSInvalidStateException"

// codeKinds maps AWS error codes to kmsclient kinds. Besides the codes
// KMS models, it lists the codes the AWS front end, the signature check
// and STS (when the credential chain assumes a role) answer with. A code
// not listed here is classified by HTTP status, then by fault.
var codeKinds = map[string]error{
	"NotFoundException": kmsclient.ErrKeyNotFound,
	"DisabledException": kmsclient.ErrKeyDisabled,
	// Refined by refineInvalidState when the key can be described.
	codeInvalidState: kmsclient.ErrKeyPendingDeletion,

	"InvalidCiphertextException": kmsclient.ErrInvalidCiphertext,
	"IncorrectKeyException":      kmsclient.ErrInvalidCiphertext,

	"AccessDeniedException":       kmsclient.ErrAccessDenied,
	"AccessDenied":                kmsclient.ErrAccessDenied, // STS
	"UnrecognizedClientException": kmsclient.ErrAccessDenied,
	"InvalidClientTokenId":        kmsclient.ErrAccessDenied,
	"InvalidSignatureException":   kmsclient.ErrAccessDenied,
	"SignatureDoesNotMatch":       kmsclient.ErrAccessDenied,
	"IncompleteSignature":         kmsclient.ErrAccessDenied,
	"MissingAuthenticationToken":  kmsclient.ErrAccessDenied,
	"ExpiredTokenException":       kmsclient.ErrAccessDenied,
	"ExpiredToken":                kmsclient.ErrAccessDenied,
	// The request's signing time is too far from the server's clock; a
	// retry signs with the same clock, so it is not transient.
	"RequestExpired": kmsclient.ErrAccessDenied,

	"ThrottlingException":       kmsclient.ErrThrottled,
	"Throttling":                kmsclient.ErrThrottled, // STS
	"ThrottledException":        kmsclient.ErrThrottled,
	"TooManyRequestsException":  kmsclient.ErrThrottled,
	"RequestLimitExceeded":      kmsclient.ErrThrottled,
	"LimitExceededException":    kmsclient.ErrThrottled,
	"RequestThrottledException": kmsclient.ErrThrottled,

	"KMSInternalException":        kmsclient.ErrUnavailable,
	"DependencyTimeoutException":  kmsclient.ErrUnavailable,
	"KeyUnavailableException":     kmsclient.ErrUnavailable,
	"InternalFailure":             kmsclient.ErrUnavailable,
	"InternalFailureException":    kmsclient.ErrUnavailable,
	"InternalServerError":         kmsclient.ErrUnavailable,
	"ServiceUnavailable":          kmsclient.ErrUnavailable,
	"ServiceUnavailableException": kmsclient.ErrUnavailable,
	"RequestTimeout":              kmsclient.ErrUnavailable,
	"RequestTimeoutException":     kmsclient.ErrUnavailable,

	"InvalidKeyUsageException":      kmsclient.ErrInvalidRequest,
	"InvalidArnException":           kmsclient.ErrInvalidRequest,
	"ValidationException":           kmsclient.ErrInvalidRequest,
	"SerializationException":        kmsclient.ErrInvalidRequest,
	"MissingParameterException":     kmsclient.ErrInvalidRequest,
	"InvalidParameterValue":         kmsclient.ErrInvalidRequest,
	"UnsupportedOperationException": kmsclient.ErrInvalidRequest,
	"DryRunOperationException":      kmsclient.ErrInvalidRequest,
	"InvalidGrantTokenException":    kmsclient.ErrInvalidRequest,
}

// mapError turns an SDK error into a *kmsclient.Error. keys are the key
// ids a KMSInvalidStateException may be about; they are described to find
// out which state the key is in. The result is never nil.
func (c *Client) mapError(ctx context.Context, op, keyID string, err error, keys ...string) *kmsclient.Error {
	e := classify(op, keyID, err)
	if e.Kind == kmsclient.ErrUnavailable && e.Message == "" && c.timedOut != nil && context.Cause(ctx) == c.timedOut {
		e.Message = c.timedOut.Error()
	}
	if e.Code == codeInvalidState && len(keys) > 0 {
		e.Kind = refineInvalidState(ctx, c.keyState, keys)
	}
	return e
}

// classify maps err without calling AWS again.
func classify(op, keyID string, err error) *kmsclient.Error {
	e := &kmsclient.Error{Provider: ProviderName, Op: op, KeyID: keyID}
	var status interface{ HTTPStatusCode() int }
	var signErr *v4.SigningError
	var apiErr smithy.APIError
	switch {
	case errors.As(err, &signErr):
		// The request never reached KMS: the credential chain failed
		// (no credentials, no instance role, STS refused to assume the
		// role). Transport failures on the way to IMDS or STS are worth
		// retrying, anything else is a configuration problem.
		e.Err = signErr
		e.Kind = kmsclient.ErrAccessDenied
		if errors.As(signErr, &apiErr) {
			e.Code = apiErr.ErrorCode()
			if k := kindOf(e.Code, 0, apiErr.ErrorFault()); kmsclient.Retryable(k) {
				e.Kind = k
			}
		} else if transportFailure(signErr) {
			e.Kind = kmsclient.ErrUnavailable
		}
	case errors.As(err, &apiErr):
		// KMS answered with an error. Err stays nil: Code and Message say
		// it all, and the SDK's own text repeats them at length.
		if errors.As(err, &status) {
			e.Status = status.HTTPStatusCode()
		}
		e.Code = apiErr.ErrorCode()
		e.Message = firstLine(apiErr.ErrorMessage())
		var rid interface{ ServiceRequestID() string }
		if errors.As(err, &rid) && rid.ServiceRequestID() != "" {
			// CloudTrail and AWS support find the call by this id.
			e.Message = strings.TrimSpace(e.Message + " (request id " + rid.ServiceRequestID() + ")")
		}
		e.Kind = kindOf(e.Code, e.Status, apiErr.ErrorFault())
	default:
		// No usable answer: connection refused or reset, DNS, TLS, a
		// timeout or a cancelled context, or a response the SDK could not
		// parse.
		e.Err = err
		e.Kind = kmsclient.ErrUnavailable
		if errors.As(err, &status) {
			e.Status = status.HTTPStatusCode()
			if s := e.Status; s >= 400 && s < 500 {
				e.Kind = kindOf("", s, smithy.FaultUnknown)
			}
		}
	}
	return e
}

// kindOf classifies an error answer by code, then HTTP status, then fault.
func kindOf(code string, status int, fault smithy.ErrorFault) error {
	if k, ok := codeKinds[code]; ok {
		return k
	}
	switch {
	case status == http.StatusTooManyRequests:
		return kmsclient.ErrThrottled
	case status >= 500:
		return kmsclient.ErrUnavailable
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return kmsclient.ErrAccessDenied
	case status >= 400:
		return kmsclient.ErrInvalidRequest
	case fault == smithy.FaultServer:
		return kmsclient.ErrUnavailable
	}
	return kmsclient.ErrInvalidRequest
}

// transportFailure reports whether err is a failure to get any answer.
func transportFailure(err error) bool {
	var send interface{ ConnectionError() bool }
	var canceled *awssdk.RequestCanceledError
	return errors.As(err, &send) || errors.As(err, &canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// refineInvalidState finds out what a KMSInvalidStateException means.
// For the calls kmsagent makes on a symmetric key it is almost always a
// key pending deletion, but it also covers a key whose material has not
// been imported, a key in a disconnected custom key store, and keys being
// created or updated; telling an admin to cancel a deletion in those
// cases would send them the wrong way. So the keys are described (an
// extra call, on the error path only) and the first one not enabled
// decides. When none can be described, typically because the role may
// not call kms:DescribeKey, the answer is ErrKeyPendingDeletion, the
// common case.
func refineInvalidState(ctx context.Context, state func(context.Context, string) (types.KeyState, error), keys []string) error {
	described := false
	for _, id := range keys {
		s, err := state(ctx, id)
		if err != nil {
			continue
		}
		described = true
		switch s {
		case types.KeyStateEnabled:
			continue
		case types.KeyStatePendingDeletion, types.KeyStatePendingReplicaDeletion:
			return kmsclient.ErrKeyPendingDeletion
		case types.KeyStateDisabled:
			return kmsclient.ErrKeyDisabled
		case types.KeyStatePendingImport:
			return kmsclient.ErrInvalidRequest
		default: // Unavailable, Creating, Updating
			return kmsclient.ErrUnavailable
		}
	}
	if described {
		// Every key is enabled now: the state changed between the two
		// calls, and the next attempt will see the new one.
		return kmsclient.ErrUnavailable
	}
	return kmsclient.ErrKeyPendingDeletion
}

// keyState describes one key for refineInvalidState.
func (c *Client) keyState(ctx context.Context, keyID string) (types.KeyState, error) {
	out, err := c.kms.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: awssdk.String(keyID)})
	if err != nil {
		return "", err
	}
	if out.KeyMetadata == nil {
		return "", fmt.Errorf("describe %s: no key metadata", keyID)
	}
	return out.KeyMetadata.KeyState, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}
