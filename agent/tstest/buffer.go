package tstest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that goroutines may write concurrently: logs
// of servers under test and output of commands, read at the end or in a
// failure report.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
