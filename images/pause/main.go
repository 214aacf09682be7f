// Command pause is the sandbox process of every pod on Strait's test nodes: it holds the
// pod's namespaces and never exits until it is told to.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
