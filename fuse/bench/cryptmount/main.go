// Command cryptmount serves a cipher directory with fuse/cryptfs in the
// foreground, without the KMS, the daemon or a worker, so that the file
// system alone can be profiled and its FUSE requests counted:
//
//	cryptmount -cpuprofile cpu.prof CIPHER-DIR MOUNTPOINT &
//	... workload ...
//	kill -USR1 $!   # unmount, write the profile
//	go tool pprof -top cryptmount cpu.prof
//
// -debug logs every FUSE request. The master key is a fixed benchmark
// key, so the same directory can be mounted again; it protects nothing.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/cryptocore"
)

func main() {
	prof := flag.String("cpuprofile", "", "write a CPU profile of the serving to this file")
	debug := flag.Bool("debug", false, "log every FUSE request")
	timeout := flag.Duration("timeout", time.Second, "entry, attribute and negative-lookup cache timeout")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: cryptmount [-cpuprofile FILE] [-debug] [-timeout D] CIPHER-DIR MOUNTPOINT")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), *prof, *debug, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "cryptmount:", err)
		os.Exit(1)
	}
}

func run(dir, mnt, prof string, debug bool, timeout time.Duration) error {
	kb := make([]byte, cryptocore.KeyLen)
	for i := range kb {
		kb[i] = byte(i + 1)
	}
	key, err := secret.FromBytes(kb)
	if err != nil {
		return err
	}
	core, err := cryptocore.New(key)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir + "/gocryptfs.diriv"); os.IsNotExist(err) {
		if err := cryptfs.InitDir(dir); err != nil {
			return err
		}
	}
	root, err := cryptfs.NewRoot(cryptfs.Options{CipherDir: dir, Core: core})
	if err != nil {
		return err
	}
	srv, err := cryptfs.Mount(mnt, root, cryptfs.MountOptions{
		Debug: debug, EntryTimeout: &timeout, AttrTimeout: &timeout, NegativeTimeout: &timeout,
	})
	if err != nil {
		return err
	}
	if prof != "" {
		f, err := os.Create(prof)
		if err != nil {
			srv.Unmount()
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			srv.Unmount()
			return err
		}
		defer pprof.StopCPUProfile()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Unmount()
	}()
	srv.Wait()
	return nil
}
