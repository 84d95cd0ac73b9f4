package signer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// canonicalRequest builds the text the signature covers, from the request
// as it goes on the wire: the escaped path and raw query of r.URL, and the
// host the client dials (r.Host, else r.URL.Host).
func canonicalRequest(r *http.Request, signed []string, body []byte) (string, error) {
	uri, err := canonicalURI(r.URL)
	if err != nil {
		return "", err
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", fmt.Errorf("signer: query: %w", err)
	}
	headers, err := canonicalHeaders(r, signed)
	if err != nil {
		return "", err
	}
	return strings.Join([]string{
		r.Method,
		uri,
		canonicalQuery(query),
		headers,
		strings.Join(signed, ";"),
		payloadHash(r, body),
	}, "\n"), nil
}

// payloadHash is X-Sdk-Content-Sha256 when set, else the hex SHA-256 of
// the body.
func payloadHash(r *http.Request, body []byte) string {
	if v := r.Header.Get(HeaderContentSHA256); v != "" {
		return v
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// canonicalURI re-escapes every path segment the way the signer does, so
// that client and server agree whatever escaping the wire form used, and
// appends the trailing '/' the scheme signs.
func canonicalURI(u *url.URL) (string, error) {
	segs := strings.Split(u.EscapedPath(), "/")
	for i, s := range segs {
		raw, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("signer: path: %w", err)
		}
		segs[i] = escape(raw)
	}
	p := strings.Join(segs, "/")
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p, nil
}

// canonicalQuery sorts by name, then by value, and escapes both.
func canonicalQuery(q url.Values) string {
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	slices.Sort(names)
	var parts []string
	for _, k := range names {
		vals := slices.Clone(q[k])
		slices.Sort(vals)
		for _, v := range vals {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	return strings.Join(parts, "&")
}

// canonicalHeaders writes one "name:value" line per value of every signed
// header, values sorted and trimmed, and ends with a newline.
func canonicalHeaders(r *http.Request, signed []string) (string, error) {
	var b strings.Builder
	for _, name := range signed {
		vals, err := headerValues(r, name)
		if err != nil {
			return "", err
		}
		slices.Sort(vals)
		for _, v := range vals {
			b.WriteString(name)
			b.WriteByte(':')
			b.WriteString(strings.TrimSpace(v))
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}

func headerValues(r *http.Request, name string) ([]string, error) {
	if name == "host" {
		h := r.Host
		if h == "" && r.URL != nil {
			h = r.URL.Host
		}
		if h == "" {
			return nil, fmt.Errorf("signer: signed header host is empty")
		}
		return []string{h}, nil
	}
	vals := slices.Clone(r.Header.Values(name))
	if len(vals) == 0 {
		return nil, fmt.Errorf("signer: signed header %s is not in the request", name)
	}
	return vals, nil
}

// signableHeaders lists, lower-cased and sorted, the headers of h that the
// scheme signs.
func signableHeaders(h http.Header) []string {
	names := make([]string, 0, len(h))
	for k := range h {
		n := strings.ToLower(k)
		if !signable(n) {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// signable reports whether a lower-case header name may be signed.
func signable(name string) bool {
	return name != "" && !strings.HasPrefix(name, "content-type") && name != "authorization" && !strings.Contains(name, "_")
}

// escape percent-encodes everything but the RFC 3986 unreserved characters,
// byte by byte, with upper-case hex digits.
func escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}
