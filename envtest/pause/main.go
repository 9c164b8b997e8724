// pause holds a pod sandbox's namespaces for the real-node tests: it sleeps until
// SIGINT or SIGTERM and reaps the zombies it inherits as PID 1. The test node
// cannot pull registry.k8s.io/pause, so it is built here and imported as an image.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time to a digest of this module's files.
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("pause", version)
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
