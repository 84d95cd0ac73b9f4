package wire

// Error codes of Huawei Cloud KMS and of its API gateway (APIGW.*).
const (
	CodeInternal           = "KMS.0101" // KMS error
	CodeIO                 = "KMS.0102" // abnormal KMS I/O
	CodeBadURL             = "KMS.0201"
	CodeBadJSON            = "KMS.0202"
	CodeTooLong            = "KMS.0203"
	CodeMissingParameter   = "KMS.0204"
	CodeBadKeyID           = "KMS.0205"
	CodeBadSequence        = "KMS.0206"
	CodeKeyNotFound        = "KMS.0207"
	CodeBadContext         = "KMS.0208"
	CodeKeyDisabled        = "KMS.0209"
	CodeKeyPendingDeletion = "KMS.0210"
	CodeTokenMissing       = "KMS.0301"
	CodeTokenInvalid       = "KMS.0302"
	CodeTokenExpired       = "KMS.0303"
	CodeBadProject         = "KMS.0305"
	CodeNoKeyPermission    = "KMS.0306"
	CodeNoAPIPermission    = "KMS.0307"
	CodeBadParameter       = "KMS.0308"
	CodeBadDataKeyLength   = "KMS.1901"
	CodeBadPlainText       = "KMS.2101"
	CodeBadPlainLength     = "KMS.2102"
	CodeEncryptDigest      = "KMS.2103"
	CodeBadCipherText      = "KMS.2201"
	CodeBadCipherLength    = "KMS.2202"
	CodeDecryptDigest      = "KMS.2203"
	CodeGatewayAuth        = "APIGW.0301"
	CodeGatewayThrottled   = "APIGW.0308"
)

// ErrorBody is the error response of KMS. The API gateway answers with
// ErrorDetail at the top level instead.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is one error.
type ErrorDetail struct {
	Code    string `json:"error_code"`
	Message string `json:"error_msg"`
}
