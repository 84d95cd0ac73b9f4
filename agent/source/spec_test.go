package source

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr string // part of the message; "" means no error
	}{
		{in: "/dev/vdb", want: Spec{Path, "/dev/vdb"}},
		{in: "/dev/disk/by-id/virtio-0b7c6b2e-7a5d-4c4e-8", want: Spec{Path, "/dev/disk/by-id/virtio-0b7c6b2e-7a5d-4c4e-8"}},
		{in: "/var/lib/images/data.img", want: Spec{Path, "/var/lib/images/data.img"}},
		{in: "UUID=3F2504E0-4F89-41D3-9A0C-0305E82C3301", want: Spec{UUID, "3f2504e0-4f89-41d3-9a0c-0305e82c3301"}},
		{in: "evs:0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44", want: Spec{EVS, "0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44"}},
		{in: "evs:0b7c6b2e-7a5d-4c4e-8", want: Spec{EVS, "0b7c6b2e-7a5d-4c4e-8"}},
		{in: "", wantErr: "empty"},
		{in: "vdb", wantErr: "must be absolute"},
		{in: "dev/vdb", wantErr: "must be absolute"},
		{in: "UUID=", wantErr: "is not a UUID"},
		{in: "UUID=3f2504e0-4f89-41d3-9a0c", wantErr: "is not a UUID"},
		{in: "uuid=3f2504e0-4f89-41d3-9a0c-0305e82c3301", wantErr: "uuid= is not supported"},
		{in: "LABEL=data", wantErr: "LABEL= is not supported"},
		{in: "PARTUUID=3f2504e0-4f89-41d3-9a0c-0305e82c3301", wantErr: "PARTUUID= is not supported"},
		{in: "evs:", wantErr: "not an EVS volume id"},
		{in: "evs:0b7c6b2e", wantErr: "at least its first 20 characters"},
		{in: "evs:0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44/../x", wantErr: "not an EVS volume id"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want ErrInvalidSpec saying %q", tt.in, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Errorf("error %q does not name the source", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if again, err := Parse(got.String()); err != nil || again != got {
				t.Errorf("Parse(String()) = %+v, %v", again, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/dev/vdb", "UUID=3f2504e0-4f89-41d3-9a0c-0305e82c3301", "evs:0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44", "LABEL=x", "", "evs:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %v does not wrap ErrInvalidSpec", err)
			}
			return
		}
		if sp.Kind == EVS && len(sp.Value) < SerialLen {
			t.Fatalf("EVS id %q shorter than a serial", sp.Value)
		}
		if again, err := Parse(sp.String()); err != nil || again != sp {
			t.Fatalf("Parse(%q) = %+v, but Parse(String()) = %+v, %v", s, sp, again, err)
		}
	})
}
