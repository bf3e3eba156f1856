package snapshot

import (
	"archive/tar"
	"path"
	"strings"
)

// entryNames records the names of a layer's tar entries (an
// archive.WithFilter that keeps every entry).
type entryNames struct {
	names map[string]struct{}
}

func (e *entryNames) add(h *tar.Header) (bool, error) {
	if name := strings.TrimPrefix(path.Clean("/"+h.Name), "/"); name != "" {
		e.names[name] = struct{}{}
	}
	return true, nil
}

// implicitDirs returns the directories the entries are in that the layer
// has no entry of, deepest first: the extraction made them with mode 0755.
func (e *entryNames) implicitDirs() []string {
	seen := map[string]bool{}
	var dirs []string
	for name := range e.names {
		for d := path.Dir(name); d != "." && d != "/" && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			if _, ok := e.names[d]; !ok {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}
