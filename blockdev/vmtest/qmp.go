package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMP is a client of qemu's machine protocol on the monitor of a running
// VM: JSON objects, one per line, in both directions. After the greeting
// and qmp_capabilities, every command gets exactly one reply, which
// carries the command's id; asynchronous events (DEVICE_DELETED, ...) come
// in between and are kept until WaitEvent asks for them.
//
// Tests use it to do to a running guest what a cloud does to a server:
// attach a disk (AddDisk) and detach it again (RemoveDisk).
type QMP struct {
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex // one command or wait at a time
	nextID int
	events []QMPEvent // received, not yet waited for
}

// QMPEvent is an asynchronous message from qemu.
type QMPEvent struct {
	Name string          // e.g. "DEVICE_DELETED"
	Data json.RawMessage // the event's data object, or nil
}

// QMPError is an error reply to a command.
type QMPError struct {
	Command string
	Class   string // e.g. "GenericError", "DeviceNotFound"
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// maxQMPLine bounds one message from qemu; replies of the commands used
// here are small, and a longer line means a broken peer.
const maxQMPLine = 1 << 20

// DialQMP connects to a monitor's unix socket (qemu -qmp unix:PATH,server,wait=off)
// and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q, err := NewQMP(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// NewQMP speaks QMP on conn, a connection to a monitor: it reads qemu's
// greeting and leaves capability negotiation mode. It owns conn from then
// on; Close closes it.
func NewQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.bound(ctx)
	defer stop()
	m, err := q.read()
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if m.kind != qmpGreeting {
		return nil, fmt.Errorf("qmp: expected a greeting, got a %s", m.kind)
	}
	if _, err := q.execute("qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return q, nil
}

// Close closes the connection to the monitor.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs one command with args (a value that marshals to a JSON
// object, or nil) and returns its "return" value. An error reply is a
// *QMPError.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.bound(ctx)
	defer stop()
	return q.execute(command, args)
}

// WaitEvent returns the first event called name whose data match says
// yes to (all of them when match is nil), including events that arrived
// while earlier commands ran. Events before it stay queued.
func (q *QMP) WaitEvent(ctx context.Context, name string, match func(data json.RawMessage) bool) (QMPEvent, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	want := func(ev QMPEvent) bool { return ev.Name == name && (match == nil || match(ev.Data)) }
	for i, ev := range q.events {
		if want(ev) {
			q.events = append(q.events[:i], q.events[i+1:]...)
			return ev, nil
		}
	}
	stop := q.bound(ctx)
	defer stop()
	for {
		m, err := q.read()
		if err != nil {
			return QMPEvent{}, fmt.Errorf("qmp: waiting for %s: %w", name, err)
		}
		if m.kind != qmpEvent {
			return QMPEvent{}, fmt.Errorf("qmp: waiting for %s: unexpected %s", name, m.kind)
		}
		if want(m.event) {
			return m.event, nil
		}
		q.events = append(q.events, m.event)
	}
}

// AddDisk attaches the raw image at path to the running VM as a new
// virtio-blk PCI disk, as a cloud attaches a volume: a block node and a
// device, both named after id, with the virtio serial number serial (""
// for none; the guest sees at most 20 bytes of it).
func (q *QMP) AddDisk(ctx context.Context, id, path, serial string) error {
	node := map[string]any{
		"driver":    "raw",
		"node-name": id,
		"file":      map[string]any{"driver": "file", "filename": path},
	}
	if _, err := q.Execute(ctx, "blockdev-add", node); err != nil {
		return err
	}
	dev := map[string]any{"driver": "virtio-blk-pci", "id": id, "drive": id}
	if serial != "" {
		dev["serial"] = serial
	}
	if _, err := q.Execute(ctx, "device_add", dev); err != nil {
		q.Execute(ctx, "blockdev-del", map[string]any{"node-name": id})
		return err
	}
	return nil
}

// RemoveDisk detaches the disk AddDisk attached as id: it asks for the
// device's removal, which the guest completes (PCI hot-unplug through
// ACPI), waits for qemu's DEVICE_DELETED event and then removes the block
// node, so the image is no longer open.
func (q *QMP) RemoveDisk(ctx context.Context, id string) error {
	if _, err := q.Execute(ctx, "device_del", map[string]any{"id": id}); err != nil {
		return err
	}
	_, err := q.WaitEvent(ctx, "DEVICE_DELETED", func(data json.RawMessage) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(data, &d) == nil && d.Device == id
	})
	if err != nil {
		return err
	}
	_, err = q.Execute(ctx, "blockdev-del", map[string]any{"node-name": id})
	return err
}

// bound makes reads and writes on the connection fail when ctx ends.
func (q *QMP) bound(ctx context.Context) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetDeadline(dl)
	} else {
		q.conn.SetDeadline(time.Time{})
	}
	after := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() { after() }
}

// execute sends a command and reads up to its reply; q.mu is held.
func (q *QMP) execute(command string, args any) (json.RawMessage, error) {
	q.nextID++
	id := strconv.Itoa(q.nextID)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch m.kind {
		case qmpEvent:
			q.events = append(q.events, m.event)
			continue
		case qmpGreeting:
			return nil, fmt.Errorf("qmp %s: unexpected greeting", command)
		}
		if m.id != id {
			return nil, fmt.Errorf("qmp %s: reply to id %q, want %q", command, m.id, id)
		}
		if m.kind == qmpErrorReply {
			return nil, &QMPError{Command: command, Class: m.errClass, Desc: m.errDesc}
		}
		return m.ret, nil
	}
}

// read reads and parses one message.
func (q *QMP) read() (qmpMessage, error) {
	var line []byte
	for {
		chunk, err := q.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxQMPLine {
			return qmpMessage{}, errors.New("message too long")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return qmpMessage{}, err
		}
		break
	}
	return parseQMPMessage(line)
}

// Kinds of messages from qemu.
type qmpKind string

const (
	qmpGreeting   qmpKind = "greeting"
	qmpReturn     qmpKind = "return"
	qmpErrorReply qmpKind = "error"
	qmpEvent      qmpKind = "event"
)

// qmpMessage is one parsed message from qemu.
type qmpMessage struct {
	kind     qmpKind
	id       string          // of a reply; "" when the command had none
	ret      json.RawMessage // of a return
	errClass string
	errDesc  string
	event    QMPEvent
}

// parseQMPMessage parses one line from the monitor. It is the only
// parser of bytes qemu sends: a message must be one JSON object with
// exactly one of QMP, return, error or event.
func parseQMPMessage(line []byte) (qmpMessage, error) {
	var raw struct {
		QMP    json.RawMessage `json:"QMP"`
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
		ID    json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return qmpMessage{}, fmt.Errorf("bad message: %w", err)
	}
	var m qmpMessage
	n := 0
	if raw.QMP != nil {
		m.kind, n = qmpGreeting, n+1
	}
	if raw.Return != nil {
		m.kind, m.ret, n = qmpReturn, raw.Return, n+1
	}
	if raw.Error != nil {
		m.kind, m.errClass, m.errDesc, n = qmpErrorReply, raw.Error.Class, raw.Error.Desc, n+1
	}
	if raw.Event != "" {
		m.kind, m.event, n = qmpEvent, QMPEvent{Name: raw.Event, Data: raw.Data}, n+1
	}
	if n != 1 {
		return qmpMessage{}, fmt.Errorf("bad message: %d of QMP, return, error, event", n)
	}
	if raw.ID != nil && (m.kind == qmpReturn || m.kind == qmpErrorReply) {
		// Commands here carry string ids; qemu echoes any JSON value.
		var s string
		if err := json.Unmarshal(raw.ID, &s); err != nil {
			m.id = string(raw.ID)
		} else {
			m.id = s
		}
	}
	return m, nil
}
