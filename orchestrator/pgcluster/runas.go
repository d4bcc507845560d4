package pgcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// account is the unprivileged user the server runs as when this process is
// root.
type account struct {
	name string
	uid  uint32
	gid  uint32
	// groups holds the primary and supplementary group ids.
	groups []uint32
}

// lookupAccount resolves the user the server must run as. It returns nil when
// this process is not root: the server then runs as the current user.
func lookupAccount(name string) (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			hint := ""
			if name == DefaultRunAsUser {
				hint = ", or install PostgreSQL, whose package creates it"
			}
			return nil, fmt.Errorf("this process runs as root and PostgreSQL refuses to, "+
				"so the server runs as user %q, which does not exist: create it with "+
				"`useradd --system --user-group %s`%s", name, name, hint)
		}
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid %q of user %q: %w", u.Uid, name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("user %q has uid 0 and PostgreSQL refuses to run as root: choose an unprivileged user", name)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid %q of user %q: %w", u.Gid, name, err)
	}
	acc := &account{name: name, uid: uint32(uid), gid: uint32(gid), groups: []uint32{uint32(gid)}}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("look up groups of user %q: %w", name, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parse group id %q of user %q: %w", id, name, err)
		}
		if !slices.Contains(acc.groups, uint32(g)) {
			acc.groups = append(acc.groups, uint32(g))
		}
	}
	return acc, nil
}

// sysProcAttr returns the process attributes for initdb and postgres: a
// process group of their own and, when acc is set, that user's credentials.
func sysProcAttr(acc *account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if acc != nil {
		attr.Credential = &syscall.Credential{Uid: acc.uid, Gid: acc.gid, Groups: acc.groups}
	}
	return attr
}

// checkTraversable verifies that acc may search every parent directory of
// dir, which must be absolute and free of symbolic links.
func checkTraversable(dir string, acc *account) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check access to %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("check access to %s: no ownership information", p)
		}
		if !canTraverse(fi.Mode(), st.Uid, st.Gid, acc.uid, acc.groups) {
			return fmt.Errorf("the PostgreSQL server runs as user %s (uid %d), which cannot enter %s "+
				"(mode %#o, owner uid %d, group gid %d), a parent of the cluster directory %s: "+
				"choose a data directory elsewhere (e.g. /var/lib/orchestrator) or run `chmod o+x %s`",
				acc.name, acc.uid, p, fi.Mode().Perm(), st.Uid, st.Gid, dir, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// canTraverse applies the Unix permission classes: the owner bits for the
// owner, else the group bits for a member of the group, else the other bits.
func canTraverse(mode fs.FileMode, fileUID, fileGID, uid uint32, groups []uint32) bool {
	switch {
	case uid == fileUID:
		return mode&0o100 != 0
	case slices.Contains(groups, fileGID):
		return mode&0o010 != 0
	default:
		return mode&0o001 != 0
	}
}

// chownTree gives dir and everything below it to acc, skipping entries that
// already belong to it.
func chownTree(dir string, acc *account) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == acc.uid && st.Gid == acc.gid {
			return nil
		}
		if err := os.Lchown(p, int(acc.uid), int(acc.gid)); err != nil {
			return fmt.Errorf("give %s to user %s: %w", p, acc.name, err)
		}
		return nil
	})
}

// childEnv returns the environment for initdb and postgres: the current one
// without PG* variables, which could override the explicit settings, and with
// HOME and USER of acc when set.
func childEnv(acc *account) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG")
	})
	if acc != nil {
		env = slices.DeleteFunc(env, func(kv string) bool {
			return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "USER=") || strings.HasPrefix(kv, "LOGNAME=")
		})
		env = append(env, "HOME=/tmp", "USER="+acc.name, "LOGNAME="+acc.name)
	}
	return env
}
