//go:build !linux

package snapshot

import "os"

// setPipeSize does nothing: only Linux resizes pipes.
func setPipeSize(*os.File, int) {}
