package cryptfs

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []uint32
	}{
		{"\t", nil},
		{"\t4343 27 100 ", []uint32{4343, 27, 100}},
		{"\t4294967295", []uint32{4294967295}},
		{"\t4294967296", nil}, // over 32 bits
		{"\t1 x 2", nil},
		{"\t-1", nil},
	} {
		if got := parseGroups(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("parseGroups(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzParseGroups: the list is all group IDs of the line or nothing.
func FuzzParseGroups(f *testing.F) {
	for _, s := range []string{"", "\t0", "\t1 2 3", " 99999999999", "\t1\t2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := parseGroups(s)
		if got == nil {
			return
		}
		fields := strings.Fields(s)
		if len(got) != len(fields) {
			t.Fatalf("%q: %d groups from %d fields", s, len(got), len(fields))
		}
		for i, g := range got {
			if v, err := strconv.ParseUint(fields[i], 10, 32); err != nil || uint32(v) != g {
				t.Fatalf("%q: group %d = %d", s, i, g)
			}
		}
	})
}
