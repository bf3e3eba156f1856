// Command stevedore is Stevedore's command line: it runs the whole fleet in
// one process on an embedded NATS server (up), asks it for a source's cache
// keys (resolve) or its content (pull), writes and reads BuildKit remote
// caches (export-cache, import-cache, and pull's --export-cache and
// --import-cache), shows a build's events (watch), and prunes the embedded
// data dir (prune). Each command is a thin call into pkg/client, pkg/broker
// and the services.
package main

import "os"

func main() { os.Exit(Main()) }
