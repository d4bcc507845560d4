package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// TreeFile is one file of a revision as the Hub's recursive tree listing gives it.
type TreeFile struct {
	// Path is repository-relative, e.g. "data/train-00001.parquet".
	Path string
	// OID is the git blob id ("oid"); for an LFS file, the blob id of its pointer.
	OID string
	// Size is the file's size (for LFS files, the LFS object's size).
	Size int64
	// LFS is nil for a file stored in git.
	LFS *LFSInfo
}

// LFSInfo is what the Hub says of a file stored in LFS: the identity of its content.
type LFSInfo struct {
	// OID is the sha256 of the content, in hexadecimal.
	OID string
	// Size is the content's size.
	Size int64
}

// ErrTooManyFiles is wrapped by ListTree's error when the revision has more files than asked for.
var ErrTooManyFiles = errors.New("too many files to list")

// treeEntry is one entry of GET /api/datasets/{repo}/tree/{revision}: {"type": "file" | "directory", "oid",
// "size", "path", "lfs": {"oid", "size", "pointerSize"}}.
type treeEntry struct {
	Type string `json:"type"`
	OID  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// file returns the entry as a TreeFile, or an error naming what the Hub left out.
func (e treeEntry) file() (TreeFile, error) {
	if e.Path == "" {
		return TreeFile{}, errors.New("a file of the listing has no path")
	}
	if e.OID == "" || e.Size < 0 {
		return TreeFile{}, fmt.Errorf("file %s of the listing has no oid or a negative size", e.Path)
	}
	f := TreeFile{Path: e.Path, OID: e.OID, Size: e.Size}
	if e.LFS != nil {
		if e.LFS.OID == "" || e.LFS.Size < 0 {
			return TreeFile{}, fmt.Errorf("LFS file %s of the listing has no oid or a negative size", e.Path)
		}
		f.LFS = &LFSInfo{OID: e.LFS.OID, Size: e.LFS.Size}
		f.Size = e.LFS.Size
	}
	return f, nil
}

// ListTree lists every file of a dataset at revision: GET /api/datasets/{repo}/tree/{revision}?recursive=true
// (expand=false), following Link rel="next" pages. At most max files (max <= 0: no bound); more is an error
// wrapping ErrTooManyFiles. Directories are skipped. The revision is path-escaped (quote(revision, safe="")).
//
// Each request is retried: a 429 after its Retry-After (1 s when absent), up to 5 times, unless the wait is over
// 60 s or would pass ctx's deadline; a 5xx or no answer (a timeout included) is tried 3 times in all, 1 s then
// 2 s apart. Any other answer, 404 for an unknown revision among them, is returned at once as a *StatusError.
func (c *Client) ListTree(ctx context.Context, repo, revision string, max int) ([]TreeFile, error) {
	first, err := c.revisionURL(repo, "/tree/", revision)
	if err != nil {
		return nil, err
	}
	var files []TreeFile
	err = eachPage(ctx, c, repo, first+"?recursive=true&expand=false", func(where string, entries []treeEntry) (bool, error) {
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f, err := e.file()
			if err != nil {
				return false, fmt.Errorf("%s: %w", where, err)
			}
			if max > 0 && len(files) == max {
				return false, fmt.Errorf("dataset %s at %s: more than %d files: %w", repo, revision, max, ErrTooManyFiles)
			}
			files = append(files, f)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// ParentCommit returns the first parent of revision (from GET /api/datasets/{repo}/commits/{revision}, the
// second entry of the first page), or "" when revision is the first commit. The Hub lists the commits reachable
// from revision newest first, so for a merge commit the entry after it is the newest commit of its history.
// Requests are retried as ListTree's are.
func (c *Client) ParentCommit(ctx context.Context, repo, revision string) (string, error) {
	first, err := c.revisionURL(repo, "/commits/", revision)
	if err != nil {
		return "", err
	}
	var ids []string
	err = eachPage(ctx, c, repo, first, func(where string, commits []struct {
		ID string `json:"id"`
	}) (bool, error) {
		for _, cm := range commits {
			if cm.ID == "" {
				return false, fmt.Errorf("%s: a commit of the listing has no id", where)
			}
			ids = append(ids, cm.ID)
		}
		// A page of one commit (the Hub's are larger) leaves the parent on the next.
		return len(ids) < 2, nil
	})
	switch {
	case err != nil:
		return "", err
	case len(ids) == 0:
		return "", fmt.Errorf("dataset %s at %s: the Hub listed no commit", repo, revision)
	case isCommitID(revision) && !strings.EqualFold(ids[0], revision):
		return "", fmt.Errorf("dataset %s at %s: the Hub listed %s first", repo, revision, ids[0])
	case len(ids) == 1:
		return "", nil
	}
	return ids[1], nil
}

// revisionURL returns {endpoint}/api/datasets/{repo}{kind}{revision}, the revision one escaped segment.
func (c *Client) revisionURL(repo, kind, revision string) (string, error) {
	if revision == "" {
		return "", fmt.Errorf("dataset %s: empty revision", repo)
	}
	path, err := datasetPath(repo)
	if err != nil {
		return "", err
	}
	return c.endpoint + path + kind + escapeSegment(revision), nil
}

// escapeSegment escapes s as Python's quote(s, safe="") does: every byte but letters, digits and "_.-~".
func escapeSegment(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := range len(s) {
		switch ch := s[i]; {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', strings.IndexByte("_.-~", ch) >= 0:
			b.WriteByte(ch)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[ch>>4])
			b.WriteByte(hex[ch&15])
		}
	}
	return b.String()
}

// isCommitID reports whether s is a full commit id: 40 hexadecimal characters.
func isCommitID(s string) bool {
	if len(s) != 40 {
		return false
	}
	return strings.Trim(strings.ToLower(s), "0123456789abcdef") == ""
}
