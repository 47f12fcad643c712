package config

import (
	"path"
	"regexp"
	"strings"
)

// A replica's store holds its history in level directories: <path>/ltx/<level>/
// for a file replica, <path>/<level %04x>/ for S3 (Litestream 0.5's layout,
// levels 0 to 9). A replica whose own path runs through such a directory
// would put its files among another replica's history, where that
// replica's restore, compaction and retention read and delete them.
var (
	fileLevelDirRE = regexp.MustCompile(`^[0-9]$`)
	s3LevelDirRE   = regexp.MustCompile(`^000[0-9]$`)
)

// levelDirOf returns, when r's path runs through a level directory of the
// layout, the path of the replica that directory belongs to and the level
// directory itself (relative to it); ok is false otherwise.
func levelDirOf(r *Replica) (owner, dir string, ok bool) {
	parts := strings.Split(strings.Trim(r.Path, "/"), "/")
	for i, p := range parts {
		var n int // how many parts name the level directory
		switch {
		case (r.Type == TypeFile || r.Type == TypeSFTP) && p == "ltx" && i+1 < len(parts) && fileLevelDirRE.MatchString(parts[i+1]):
			n = 2
		case objectStore(r.Type) && s3LevelDirRE.MatchString(p):
			n = 1
		default:
			continue
		}
		owner = strings.Join(parts[:i], "/")
		if strings.HasPrefix(r.Path, "/") {
			owner = "/" + owner
		}
		return owner, strings.Join(parts[i:i+n], "/"), true
	}
	return "", "", false
}

// levelDir reports a replica whose path runs through a level directory.
func (k *checker) levelDir(r *Replica, rp string) {
	owner, dir, ok := levelDirOf(r)
	if !ok {
		return
	}
	o := *r
	o.Path = owner
	k.errorf(rp, []string{sub(rp, "url"), sub(rp, "path")},
		"%s is inside the level directory %s of a replica at %s: its files would mix with that replica's history; give it a path of its own, outside %s",
		r.Location(), dir, o.Location(), path.Join(owner, dir))
}

// contains tells whether store a holds store b below its own path (not the
// same store: that is the "same store" check), so that one replica's files
// would sit inside another's.
func (a *Replica) contains(b *Replica) bool {
	if a.Type != b.Type || objectStore(a.Type) && (a.Endpoint != b.Endpoint || a.Bucket != b.Bucket || a.AccountName != b.AccountName) || a.Type == TypeSFTP && a.Host != b.Host || a.Path == b.Path {
		return false
	}
	if objectStore(a.Type) && a.Path == "" {
		return true // the bucket's root holds every prefix
	}
	return strings.HasPrefix(b.Path, strings.TrimSuffix(a.Path, "/")+"/")
}

// nested reports every replica whose store lies inside another replica's,
// of the same database or another: stores is every located replica with its
// path in the file, in file order.
func (k *checker) nested(stores []located) {
	for i, a := range stores {
		for j, b := range stores {
			if i != j && a.r.contains(b.r) {
				k.errorf(b.path, []string{sub(b.path, "url"), sub(b.path, "path")},
					"%s is inside the store of %s (%s): each replica needs a path of its own, outside every other replica's",
					b.r.Location(), a.path, a.r.Location())
			}
		}
	}
}

// located is a replica with a location, and where the file wrote it.
type located struct {
	r    *Replica
	path string
}
