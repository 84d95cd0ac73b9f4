package crypt_test

// Shared by the host and the guest side of the VM tests.
const (
	guestConfig = "/etc/kmsagent/agent.toml"
	guestKMSDir = "/vmtest/kms"
	guestKeyID  = "/vmtest/key-id" // holds the KMS key id
	kmsagentBin = "/bin/kmsagent"
	helloText   = "hello from the host\n"
	vmText      = "written in the VM\n"
)
