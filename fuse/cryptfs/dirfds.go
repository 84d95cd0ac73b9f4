package cryptfs

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// dirFds keeps open descriptors of recently used directories, at most max
// of them unless more are in use at once. A descriptor follows its
// directory through renames, so it never needs invalidation; it is closed
// when evicted with no user, or when its node is forgotten or removed.
//
// The node fields dfd, drefs, gone, prev and next are guarded by mu.
type dirFds struct {
	mu         sync.Mutex
	head, tail *node // most recently used first
	count      int
	max        int
}

// acquire returns an open descriptor of directory n; the caller must pass
// n to release when done with it. The root's descriptor is permanent.
func (c *dirFds) acquire(n *node) (int, syscall.Errno) {
	if n == n.r.root {
		return n.r.rootFd, 0
	}
	c.mu.Lock()
	if n.dfd >= 0 {
		n.drefs++
		c.toFront(n)
		fd := n.dfd
		c.mu.Unlock()
		return fd, 0
	}
	c.mu.Unlock()

	p, pfd, cName, e := n.locate()
	if e != 0 {
		return -1, e
	}
	fd, err := unix.Openat(pfd, cName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	p.closeDir()
	if err != nil {
		return -1, errno(err)
	}
	return c.install(n, fd), 0
}

// install makes fd the descriptor of n with one reference, unless another
// goroutine got there first, in which case fd is closed and theirs used.
func (c *dirFds) install(n *node, fd int) int {
	c.mu.Lock()
	if n.dfd >= 0 {
		n.drefs++
		c.toFront(n)
		got := n.dfd
		c.mu.Unlock()
		unix.Close(fd)
		return got
	}
	n.dfd, n.drefs = fd, 1
	c.pushFront(n)
	c.count++
	var victims []int
	for v := c.tail; v != nil && c.count > c.max; {
		prev := v.prev
		if v.drefs == 0 {
			victims = append(victims, c.evict(v))
		}
		v = prev
	}
	c.mu.Unlock()
	for _, v := range victims {
		unix.Close(v)
	}
	return fd
}

// release drops a reference taken by acquire.
func (c *dirFds) release(n *node) {
	if n == n.r.root {
		return
	}
	c.mu.Lock()
	n.drefs--
	fd := -1
	if n.drefs == 0 && n.gone && n.dfd >= 0 {
		fd = c.evict(n)
	}
	c.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// drop closes n's descriptor now if unused, else when the last user
// releases it, and keeps it from being cached again while forgotten.
// forget is true when the kernel forgot the node for good.
func (c *dirFds) drop(n *node, forget bool) {
	if n == n.r.root {
		return
	}
	c.mu.Lock()
	if forget {
		n.gone = true
	}
	fd := -1
	if n.dfd >= 0 && n.drefs == 0 {
		fd = c.evict(n)
	}
	c.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
}

// evict takes n's descriptor, which nobody uses, out of the cache and
// returns it; the caller holds mu and closes the descriptor once it has
// unlocked mu.
func (c *dirFds) evict(n *node) int {
	fd := n.dfd
	c.unlink(n)
	n.dfd = -1
	c.count--
	return fd
}

func (c *dirFds) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for v := c.head; v != nil; {
		next := v.next
		unix.Close(v.dfd)
		v.dfd = -1
		v.prev, v.next = nil, nil
		v = next
	}
	c.head, c.tail, c.count = nil, nil, 0
}

func (c *dirFds) pushFront(n *node) {
	n.prev, n.next = nil, c.head
	if c.head != nil {
		c.head.prev = n
	}
	c.head = n
	if c.tail == nil {
		c.tail = n
	}
}

func (c *dirFds) unlink(n *node) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		c.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

func (c *dirFds) toFront(n *node) {
	if c.head == n {
		return
	}
	c.unlink(n)
	c.pushFront(n)
}
