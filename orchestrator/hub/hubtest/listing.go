package hubtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// An LFS pointer starts with lfsVersionLine and is at most lfsLargest bytes long (git-lfs reads no larger
// pointer): only blobs that small are read to see whether they are one.
const (
	lfsVersionLine = "version https://git-lfs.github.com/spec/v1\n"
	lfsLargest     = 1024
)

// entry is one file or directory of a revision, in the shape of the Hub's tree and paths-info answers.
type entry struct {
	Type string   `json:"type"` // "file" or "directory"
	OID  string   `json:"oid"`  // git's blob id, or tree id for a directory
	Size int64    `json:"size"` // the content's size (the LFS object's for an LFS file); 0 for a directory
	Path string   `json:"path"`
	LFS  *lfsInfo `json:"lfs,omitempty"`
}

// lfsInfo is what the Hub says of a file stored in LFS.
type lfsInfo struct {
	OID         string `json:"oid"` // sha256 of the content, hexadecimal
	Size        int64  `json:"size"`
	PointerSize int64  `json:"pointerSize"`
}

// commit is one commit of a listing, in the shape of the Hub's commits answer.
type commit struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Message string   `json:"message"`
	Date    string   `json:"date"`
	Authors []author `json:"authors"`
}

type author struct {
	User string `json:"user"`
}

// ref is one branch or tag.
type ref struct {
	Name         string `json:"name"`
	Ref          string `json:"ref"`
	TargetCommit string `json:"targetCommit"`
}

// resolve returns the commit rev names: a full commit id, a branch or tag name, or a full ref name. ok is false
// when there is no such commit.
func (r *Repo) resolve(ctx context.Context, rev string) (sha string, ok bool, err error) {
	if rev == "" || strings.HasPrefix(rev, "-") || strings.ContainsAny(rev, " \t\n:^~?*[\\") {
		return "", false, nil
	}
	var candidates []string
	switch {
	case isCommitID(rev):
		candidates = []string{rev}
	case strings.HasPrefix(rev, "refs/heads/") || strings.HasPrefix(rev, "refs/tags/"):
		candidates = []string{rev}
	default:
		candidates = []string{"refs/heads/" + rev, "refs/tags/" + rev}
	}
	for _, c := range candidates {
		out, err := r.git(ctx, nil, "rev-parse", "--verify", "--quiet", c+"^{commit}")
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == 1 {
			continue
		}
		if err != nil {
			return "", false, err
		}
		return strings.TrimSpace(string(out)), true, nil
	}
	return "", false, nil
}

func isCommitID(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// tree lists every file and directory of commit sha, as git ls-tree gives them, LFS pointers read as such.
func (r *Repo) tree(ctx context.Context, sha string) ([]entry, error) {
	out, err := r.git(ctx, nil, "ls-tree", "-r", "-t", "-l", "-z", "--full-tree", sha)
	if err != nil {
		return nil, err
	}
	var entries []entry
	var small []int // the blobs that may be LFS pointers, by index in entries
	for rec := range bytes.SplitSeq(bytes.TrimSuffix(out, []byte{0}), []byte{0}) {
		// <mode> SP <type> SP <object> SP <size, padded> TAB <path>
		meta, path, found := strings.Cut(string(rec), "\t")
		fields := strings.Fields(meta)
		if !found || len(fields) != 4 {
			return nil, fmt.Errorf("git ls-tree %s: unexpected record %q", sha, rec)
		}
		switch fields[1] {
		case "tree":
			entries = append(entries, entry{Type: "directory", OID: fields[2], Path: path})
		case "blob":
			size, err := strconv.ParseInt(fields[3], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("git ls-tree %s: size of %s: %w", sha, path, err)
			}
			if size <= lfsLargest {
				small = append(small, len(entries))
			}
			entries = append(entries, entry{Type: "file", OID: fields[2], Size: size, Path: path})
		}
		// A submodule ("commit") is no file of the Hub's.
	}
	if len(small) == 0 {
		return entries, nil
	}
	var ids bytes.Buffer
	for _, i := range small {
		ids.WriteString(entries[i].OID + "\n")
	}
	blobs, err := r.git(ctx, ids.Bytes(), "cat-file", "--batch")
	if err != nil {
		return nil, err
	}
	rd := bufio.NewReader(bytes.NewReader(blobs))
	for _, i := range small {
		// <oid> SP <type> SP <size> LF <content> LF
		header, err := rd.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("git cat-file: %w", err)
		}
		fields := strings.Fields(header)
		if len(fields) != 3 || fields[0] != entries[i].OID {
			return nil, fmt.Errorf("git cat-file: unexpected header %q for %s", header, entries[i].OID)
		}
		content := make([]byte, entries[i].Size+1)
		if _, err := io.ReadFull(rd, content); err != nil {
			return nil, fmt.Errorf("git cat-file %s: %w", entries[i].OID, err)
		}
		if lfs, ok := parsePointer(content[:entries[i].Size]); ok {
			lfs.PointerSize = entries[i].Size
			entries[i].Size = lfs.Size
			entries[i].LFS = lfs
		}
	}
	return entries, nil
}

// parsePointer reads an LFS pointer: the version line first, then "key value" lines, among them the sha256 oid
// and the size.
func parsePointer(b []byte) (*lfsInfo, bool) {
	s, ok := strings.CutPrefix(string(b), lfsVersionLine)
	if !ok || !strings.HasSuffix(s, "\n") {
		return nil, false
	}
	var info lfsInfo
	haveSize := false
	for line := range strings.SplitSeq(strings.TrimSuffix(s, "\n"), "\n") {
		key, value, _ := strings.Cut(line, " ")
		switch key {
		case "oid":
			hex, ok := strings.CutPrefix(value, "sha256:")
			if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
				return nil, false
			}
			info.OID = hex
		case "size":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return nil, false
			}
			info.Size, haveSize = n, true
		}
	}
	return &info, info.OID != "" && haveSize
}

// history lists commit sha and its ancestors, newest first, as git log gives them.
func (r *Repo) history(ctx context.Context, sha string) ([]commit, error) {
	out, err := r.git(ctx, nil, "log", "--format=%H%x00%an%x00%aI%x00%s%x00%b%x1e", sha)
	if err != nil {
		return nil, err
	}
	var list []commit
	for rec := range strings.SplitSeq(string(out), "\x1e") {
		rec = strings.TrimLeft(rec, "\n")
		if rec == "" {
			continue
		}
		f := strings.Split(rec, "\x00")
		if len(f) != 5 {
			return nil, fmt.Errorf("git log %s: unexpected record %q", sha, rec)
		}
		date, err := time.Parse(time.RFC3339, f[2])
		if err != nil {
			return nil, fmt.Errorf("git log %s: date of %s: %w", sha, f[0], err)
		}
		list = append(list, commit{ID: f[0], Title: f[3], Message: strings.TrimSpace(f[4]),
			Date: date.UTC().Format("2006-01-02T15:04:05.000Z"), Authors: []author{{User: f[1]}}})
	}
	return list, nil
}

// refs lists the branches and the tags with the commits they point at.
func (r *Repo) refs(ctx context.Context) (branches, tags []ref, err error) {
	out, err := r.git(ctx, nil, "for-each-ref", "--format=%(refname)%00%(*objectname)%00%(objectname)",
		"refs/heads", "refs/tags")
	if err != nil {
		return nil, nil, err
	}
	branches, tags = []ref{}, []ref{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\x00")
		if len(f) != 3 {
			continue
		}
		target := f[1] // an annotated tag's commit
		if target == "" {
			target = f[2]
		}
		if name, ok := strings.CutPrefix(f[0], "refs/heads/"); ok {
			branches = append(branches, ref{Name: name, Ref: f[0], TargetCommit: target})
		} else if name, ok := strings.CutPrefix(f[0], "refs/tags/"); ok {
			tags = append(tags, ref{Name: name, Ref: f[0], TargetCommit: target})
		}
	}
	return branches, tags, nil
}
