package huaweicloud

import (
	"fmt"
	"slices"
	"strings"
)

// kmsRegions maps the regions of Huawei Cloud KMS to their endpoints, as
// the official SDK's region table for KMS (services/kms/v2/region, SDK
// v0.1.188) lists them. Most are https://kms.<region>.myhuaweicloud.com,
// but not all: the European sovereign region lives under
// myhuaweicloud.eu. A region missing here is refused, as the SDK refuses
// it, rather than guessed: a guessed host may be the wrong cloud.
var kmsRegions = map[string]string{
	"af-north-1":       "https://kms.af-north-1.myhuaweicloud.com",
	"af-south-1":       "https://kms.af-south-1.myhuaweicloud.com",
	"ae-ad-1":          "https://kms.ae-ad-1.myhuaweicloud.com",
	"ap-southeast-1":   "https://kms.ap-southeast-1.myhuaweicloud.com",
	"ap-southeast-2":   "https://kms.ap-southeast-2.myhuaweicloud.com",
	"ap-southeast-3":   "https://kms.ap-southeast-3.myhuaweicloud.com",
	"ap-southeast-4":   "https://kms.ap-southeast-4.myhuaweicloud.com",
	"ap-southeast-5":   "https://kms.ap-southeast-5.myhuaweicloud.com",
	"cn-east-2":        "https://kms.cn-east-2.myhuaweicloud.com",
	"cn-east-3":        "https://kms.cn-east-3.myhuaweicloud.com",
	"cn-east-4":        "https://kms.cn-east-4.myhuaweicloud.com",
	"cn-east-5":        "https://kms.cn-east-5.myhuaweicloud.com",
	"cn-north-1":       "https://kms.cn-north-1.myhuaweicloud.com",
	"cn-north-2":       "https://kms.cn-north-2.myhuaweicloud.com",
	"cn-north-4":       "https://kms.cn-north-4.myhuaweicloud.com",
	"cn-north-9":       "https://kms.cn-north-9.myhuaweicloud.com",
	"cn-north-11":      "https://kms.cn-north-11.myhuaweicloud.com",
	"cn-north-12":      "https://kms.cn-north-12.myhuaweicloud.com",
	"cn-south-1":       "https://kms.cn-south-1.myhuaweicloud.com",
	"cn-south-2":       "https://kms.cn-south-2.myhuaweicloud.com",
	"cn-south-4":       "https://kms.cn-south-4.myhuaweicloud.com",
	"cn-southwest-2":   "https://kms.cn-southwest-2.myhuaweicloud.com",
	"cn-southwest-3":   "https://kms.cn-southwest-3.myhuaweicloud.com",
	"eu-west-101":      "https://kms.eu-west-101.myhuaweicloud.eu",
	"la-north-2":       "https://kms.la-north-2.myhuaweicloud.com",
	"la-south-2":       "https://kms.la-south-2.myhuaweicloud.com",
	"me-east-1":        "https://kms.me-east-1.myhuaweicloud.com",
	"my-kualalumpur-1": "https://kms.my-kualalumpur-1.myhuaweicloud.com",
	"na-mexico-1":      "https://kms.na-mexico-1.myhuaweicloud.com",
	"ru-moscow-1":      "https://kms.ru-moscow-1.myhuaweicloud.com",
	"sa-brazil-1":      "https://kms.sa-brazil-1.myhuaweicloud.com",
	"tr-west-1":        "https://kms.tr-west-1.myhuaweicloud.com",
}

// regionEndpoint returns the KMS endpoint of region.
func regionEndpoint(region string) (string, error) {
	if ep, ok := kmsRegions[region]; ok {
		return ep, nil
	}
	known := slices.Sorted(func(yield func(string) bool) {
		for r := range kmsRegions {
			if !yield(r) {
				return
			}
		}
	})
	return "", fmt.Errorf("huaweicloud kms: region %q has no known KMS endpoint; set endpoint to the KMS URL of that region, or use one of %s", region, strings.Join(known, ", "))
}
