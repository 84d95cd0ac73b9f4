package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseQMPMessage(t *testing.T) {
	tests := []struct {
		line string
		want qmpMessage
		bad  bool
	}{
		{line: `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`, want: qmpMessage{kind: qmpGreeting}},
		{line: `{"return": {}, "id": "3"}`, want: qmpMessage{kind: qmpReturn, id: "3", ret: json.RawMessage(`{}`)}},
		{line: `{"return": [1,2]}`, want: qmpMessage{kind: qmpReturn, ret: json.RawMessage(`[1,2]`)}},
		{line: `{"return": {}, "id": 7}`, want: qmpMessage{kind: qmpReturn, id: "7", ret: json.RawMessage(`{}`)}},
		{line: `{"id": "2", "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`, want: qmpMessage{kind: qmpErrorReply, id: "2", errClass: "DeviceNotFound", errDesc: "Device 'x' not found"}},
		{line: `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", "data": {"device": "hot0", "path": "/machine/peripheral/hot0"}}`,
			want: qmpMessage{kind: qmpEvent, event: QMPEvent{Name: "DEVICE_DELETED", Data: json.RawMessage(`{"device": "hot0", "path": "/machine/peripheral/hot0"}`)}}},
		{line: `{"event": "RESUME"}`, want: qmpMessage{kind: qmpEvent, event: QMPEvent{Name: "RESUME"}}},
		{line: `{}`, bad: true},
		{line: `{"return": {}, "event": "X"}`, bad: true},
		{line: `[1]`, bad: true},
		{line: `{"error": 5}`, bad: true},
		{line: `not json`, bad: true},
	}
	for _, tt := range tests {
		got, err := parseQMPMessage([]byte(tt.line))
		if tt.bad {
			if err == nil {
				t.Errorf("%s: parsed as %+v, want an error", tt.line, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.line, err)
			continue
		}
		if got.kind != tt.want.kind || got.id != tt.want.id || string(got.ret) != string(tt.want.ret) ||
			got.errClass != tt.want.errClass || got.errDesc != tt.want.errDesc ||
			got.event.Name != tt.want.event.Name || string(got.event.Data) != string(tt.want.event.Data) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.line, got, tt.want)
		}
	}
}

func FuzzParseQMPMessage(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {}, "capabilities": []}}`,
		`{"return": {}, "id": "1"}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": "2"}`,
		`{"event": "DEVICE_DELETED", "data": {"device": "d"}}`,
		`{"return": null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := parseQMPMessage(line)
		if err != nil {
			return
		}
		switch m.kind {
		case qmpGreeting, qmpReturn, qmpErrorReply:
		case qmpEvent:
			if m.event.Name == "" {
				t.Fatalf("event without a name from %q", line)
			}
		default:
			t.Fatalf("kind %q from %q", m.kind, line)
		}
	})
}

// fakeQEMU serves the qemu side of a QMP connection from a script of
// (expected command, answer lines) pairs.
func fakeQEMU(t *testing.T, conn net.Conn, steps [][2]string) <-chan error {
	done := make(chan error, 1)
	go func() {
		defer conn.Close()
		r := bufio.NewReader(conn)
		conn.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		for _, s := range steps {
			line, err := r.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			var req struct {
				Execute string `json:"execute"`
				ID      string `json:"id"`
			}
			if err := json.Unmarshal([]byte(line), &req); err != nil || req.Execute != s[0] {
				done <- errors.New("unexpected command " + line)
				return
			}
			conn.Write([]byte(strings.ReplaceAll(s[1], "$ID", req.ID) + "\n"))
		}
		done <- nil
	}()
	return done
}

// TestQMPRemoveDisk: an event that comes before or between replies is
// kept for WaitEvent, replies are matched by id, and an error reply
// comes back as a *QMPError.
func TestQMPRemoveDisk(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ours, theirs := net.Pipe()
	done := fakeQEMU(t, theirs, [][2]string{
		{"qmp_capabilities", `{"return": {}, "id": "$ID"}`},
		{"device_del", `{"event": "DEVICE_DELETED", "data": {"device": "other"}}` + "\n" +
			`{"return": {}, "id": "$ID"}` + "\n" +
			`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/hot0/virtio-backend"}}` + "\n" +
			`{"event": "DEVICE_DELETED", "data": {"device": "hot0"}}`},
		{"blockdev-del", `{"return": {}, "id": "$ID"}`},
		{"device_del", `{"error": {"class": "DeviceNotFound", "desc": "Device 'hot0' not found"}, "id": "$ID"}`},
	})
	q, err := NewQMP(ctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.RemoveDisk(ctx, "hot0"); err != nil {
		t.Fatal(err)
	}
	err = q.RemoveDisk(ctx, "hot0")
	var qerr *QMPError
	if !errors.As(err, &qerr) || qerr.Class != "DeviceNotFound" || qerr.Command != "device_del" {
		t.Fatalf("second remove: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The event for the other device is still there.
	if ev, err := q.WaitEvent(ctx, "DEVICE_DELETED", nil); err != nil || !strings.Contains(string(ev.Data), "other") {
		t.Fatalf("queued event: %+v %v", ev, err)
	}
}

// TestQMPContext: a monitor that does not answer holds a command only
// until its context ends.
func TestQMPContext(t *testing.T) {
	ours, theirs := net.Pipe()
	defer theirs.Close()
	go bufio.NewReader(theirs).WriteTo(discard{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := NewQMP(ctx, ours); err == nil {
		t.Fatal("NewQMP without a greeting succeeded")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestMarkerArg(t *testing.T) {
	tests := []struct {
		line, prefix, want string
		ok                 bool
	}{
		{"VMTEST-WAIT attach\r\n", waitPrefix, "attach", true},
		{"[   3.1] virtio_blk: VMTEST-WAIT detach", waitPrefix, "detach", true},
		{"VMTEST-WAIT \n", waitPrefix, "", false},
		{"VMTEST-WAITING x", waitPrefix, "", false},
		{"VMTEST-DONE attach", donePrefix, "attach", true},
		{"VMTEST-DONE attach", waitPrefix, "", false},
	}
	for _, tt := range tests {
		if got, ok := markerArg(tt.line, tt.prefix); got != tt.want || ok != tt.ok {
			t.Errorf("markerArg(%q, %s) = %q, %v", tt.line, tt.prefix, got, ok)
		}
	}
}
