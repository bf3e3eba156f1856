// Command stevedore is Stevedore's command line: it runs the whole fleet in
// one process on an embedded NATS server (up), asks it for a source's cache
// keys (resolve), and shows a build's events (watch). Each command is a thin
// call into pkg/client, pkg/broker and the services.
package main

import "os"

func main() { os.Exit(Main()) }
