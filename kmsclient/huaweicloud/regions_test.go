package huaweicloud

import (
	"strings"
	"testing"
)

// TestRegionEndpoints: the endpoint of a region comes from the SDK's
// table, including regions outside myhuaweicloud.com.
func TestRegionEndpoints(t *testing.T) {
	for region, want := range map[string]string{
		"cn-north-4":       "https://kms.cn-north-4.myhuaweicloud.com",
		"ap-southeast-1":   "https://kms.ap-southeast-1.myhuaweicloud.com",
		"my-kualalumpur-1": "https://kms.my-kualalumpur-1.myhuaweicloud.com",
		"eu-west-101":      "https://kms.eu-west-101.myhuaweicloud.eu",
	} {
		_, base, err := Config{ProjectID: testProject, Region: region, Credentials: CredentialsMetadata}.check()
		if err != nil {
			t.Fatalf("%s: %v", region, err)
		}
		if got := base.String(); got != want {
			t.Errorf("%s: endpoint %s, want %s", region, got, want)
		}
	}
	// An explicit endpoint wins over the table.
	_, base, err := Config{ProjectID: testProject, Region: "eu-west-101", Endpoint: "https://kms.example.eu", Credentials: CredentialsMetadata}.check()
	if err != nil || base.String() != "https://kms.example.eu" {
		t.Errorf("endpoint override: %v, %v", base, err)
	}
	for region, ep := range kmsRegions {
		if !strings.HasPrefix(ep, "https://kms."+region+".myhuaweicloud.") {
			t.Errorf("%s: table endpoint %s", region, ep)
		}
	}
}
