package uevent_test

import (
	"context"
	"errors"
	"log"

	"kmsagent/agent/uevent"
)

// A daemon's hot-plug loop: udev's events where udevd runs, the kernel's
// elsewhere; a rescan after lost events.
func ExampleListener() {
	ctx := context.Background()
	l, err := uevent.Listen(uevent.Options{
		Group:     uevent.DetectGroup(uevent.UdevControl),
		Subsystem: "block",
		Actions:   []uevent.Action{uevent.ActionAdd, uevent.ActionChange, uevent.ActionRemove},
		OnDrop:    func(err error) { log.Printf("ignored device event: %v", err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	for {
		ev, err := l.Next(ctx)
		switch {
		case errors.Is(err, uevent.ErrEventsLost):
			log.Print("device events were lost; rescanning")
			continue
		case err != nil:
			log.Fatal(err)
		}
		log.Printf("%s /dev/%s (%d:%d)", ev.Action, ev.DevName, ev.Major, ev.Minor)
	}
}
