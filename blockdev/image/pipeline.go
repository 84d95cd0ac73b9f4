package image

import (
	"context"
	"errors"
	"io"
	"sync"
)

// Pipeline sizes: chunkSize bytes per buffer, buffers in flight. Four
// 4 MiB buffers let one be read, one encrypted and one written while the
// fourth waits, and keep memory use at 16 MiB.
const (
	chunkSize = 4 << 20
	buffers   = 4
)

// chunk is one buffer on its way through the pipeline.
type chunk struct {
	buf []byte
	n   int   // bytes of data (the last chunk may be short)
	out int   // bytes to write, set by process (n plus padding)
	off int64 // payload offset of buf[0]
}

// stages are the three steps of a pipeline. read fills buf and returns
// how many bytes it put there, with io.EOF once nothing is left (possibly
// together with a last short chunk). process works on a chunk in place
// and sets c.out. write consumes c.buf[:c.out].
type stages struct {
	read    func(buf []byte, off int64) (int, error)
	process func(c *chunk) error
	write   func(c *chunk) error
}

// run drives the stages with one goroutine each, so reading, crypto and
// writing overlap. The first error stops everything and is returned.
func (s stages) run(parent context.Context) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var once sync.Once
	var firstErr error
	fail := func(err error) {
		once.Do(func() { firstErr = err })
		cancel()
	}
	// Buffers are made as the reader needs them, so a small input costs
	// one buffer rather than the whole ring.
	free := make(chan []byte, buffers)
	made := 0
	toProcess := make(chan *chunk, buffers)
	toWrite := make(chan *chunk, buffers)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // reader
		defer wg.Done()
		defer close(toProcess)
		var off int64
		for {
			var buf []byte
			select {
			case buf = <-free:
			default:
				if made < buffers {
					buf = make([]byte, chunkSize)
					made++
					break
				}
				select {
				case buf = <-free:
				case <-ctx.Done():
					return
				}
			}
			n, err := s.read(buf, off)
			if n > 0 {
				select {
				case toProcess <- &chunk{buf: buf, n: n, off: off}:
				case <-ctx.Done():
					return
				}
				off += int64(n)
			}
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				fail(err)
				return
			}
		}
	}()
	go func() { // crypto
		defer wg.Done()
		defer close(toWrite)
		for c := range toProcess {
			if ctx.Err() != nil {
				return
			}
			if err := s.process(c); err != nil {
				fail(err)
				return
			}
			select {
			case toWrite <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	// The writer runs here; after a failure it only drains, so the other
	// stages can finish.
	for c := range toWrite {
		if ctx.Err() != nil {
			continue
		}
		if err := s.write(c); err != nil {
			fail(err)
			continue
		}
		free <- c.buf // never blocks: free holds every buffer there is
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return parent.Err()
}
