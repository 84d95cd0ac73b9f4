package uuid

import "testing"

func TestRoundTrip(t *testing.T) {
	seen := map[UUID]bool{}
	for range 100 {
		u := New()
		if seen[u] || u[6]>>4 != 4 || u[8]>>6 != 2 {
			t.Fatalf("bad or repeated v4 UUID %s", u)
		}
		seen[u] = true
		p, err := Parse(u.String())
		if err != nil || p != u {
			t.Fatalf("parse %s: %v", u, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "not-a-uuid", "0123456789abcdef0123456789abcdef", "0123456-89ab-cdef-0123-456789abcdef0", "g1234567-89ab-cdef-0123-456789abcdef"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded", s)
		}
	}
	if _, err := Parse("0123ABCD-89ab-cdef-0123-456789abcdef"); err != nil {
		t.Errorf("upper case refused: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("0123abcd-89ab-cdef-0123-456789abcdef")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err == nil {
			if p, err := Parse(u.String()); err != nil || p != u {
				t.Fatalf("round trip of %q", s)
			}
		}
	})
}
