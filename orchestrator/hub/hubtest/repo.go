package hubtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// commitEpoch is the date of a Repo's first commit; each further commit is one second later, so that commit ids
// are the same from run to run and listings newest first are in commit order.
var commitEpoch = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

// Repo is one dataset of the stand-in Hub: a git repository in a temporary directory of the test. Its methods
// are safe for concurrent use with a Server answering about it.
type Repo struct {
	t   testing.TB
	id  string
	dir string

	mu      sync.Mutex // serialises git commands, and guards commits
	commits int
}

// NewRepo returns an empty dataset named id ("owner/name") on branch main, with no commit yet. It fails the test
// when git cannot be run.
func NewRepo(t testing.TB, id string) *Repo {
	t.Helper()
	parts := strings.Split(id, "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		t.Fatalf("hubtest: repository id %q: want owner/name", id)
	}
	r := &Repo{t: t, id: id, dir: t.TempDir()}
	r.mustGit(t, "init", "-q", "-b", "main", ".")
	return r
}

// ID returns the repository's id, "owner/name".
func (r *Repo) ID() string { return r.id }

// Write sets the content of the file at path (repository-relative, "/"-separated), stored in git. Like every
// change of the files, it is recorded by the next Commit.
func (r *Repo) Write(path, content string) {
	r.t.Helper()
	r.writeFile(path, content)
}

// WriteLFS sets the content of the file at path, stored in LFS: what is committed is the LFS pointer
// ("version https://git-lfs.github.com/spec/v1", "oid sha256:<hex>", "size <n>"), as git-lfs would commit it.
func (r *Repo) WriteLFS(path, content string) {
	r.t.Helper()
	r.writeFile(path, lfsPointer(content))
}

// Remove deletes the file at path.
func (r *Repo) Remove(path string) {
	r.t.Helper()
	if err := os.Remove(r.file(path)); err != nil {
		r.t.Fatalf("hubtest: remove %s: %v", path, err)
	}
}

// Rename moves the file at from to to.
func (r *Repo) Rename(from, to string) {
	r.t.Helper()
	dst := r.file(to)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		r.t.Fatalf("hubtest: rename %s: %v", from, err)
	}
	if err := os.Rename(r.file(from), dst); err != nil {
		r.t.Fatalf("hubtest: rename %s to %s: %v", from, to, err)
	}
}

// Commit records every change of the files since the last commit (none is fine) on the current branch, with
// message as its title (its first line) and description, and returns the new commit's id.
func (r *Repo) Commit(t testing.TB, message string) string {
	t.Helper()
	if strings.TrimSpace(message) == "" {
		t.Fatalf("hubtest: commit of %s: empty message", r.id)
	}
	r.mustGit(t, "add", "-A")
	r.mustGit(t, "-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "--no-verify", "-m", message)
	r.mu.Lock()
	r.commits++
	r.mu.Unlock()
	return r.mustGit(t, "rev-parse", "HEAD")
}

// Branch creates the branch name at from (a commit id or a branch name). The current branch stays as it is.
func (r *Repo) Branch(t testing.TB, name, from string) {
	t.Helper()
	r.mustGit(t, "branch", "--no-track", name, from)
}

// Checkout makes name the current branch, the one the next Commit adds to. Changes not yet committed go along,
// as with git checkout.
func (r *Repo) Checkout(t testing.TB, name string) {
	t.Helper()
	r.mustGit(t, "checkout", "-q", name)
}

func (r *Repo) writeFile(path, content string) {
	r.t.Helper()
	name := r.file(path)
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		r.t.Fatalf("hubtest: write %s: %v", path, err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		r.t.Fatalf("hubtest: write %s: %v", path, err)
	}
}

// file returns where the file at path lives, refusing paths that are not repository-relative.
func (r *Repo) file(path string) string {
	r.t.Helper()
	clean := filepath.ToSlash(filepath.Clean(filepath.FromSlash(path)))
	if path == "" || clean != path || strings.HasPrefix(clean, "../") || clean == ".." || filepath.IsAbs(path) ||
		clean == ".git" || strings.HasPrefix(clean, ".git/") {
		r.t.Fatalf("hubtest: path %q: want a clean repository-relative path", path)
	}
	return filepath.Join(r.dir, filepath.FromSlash(path))
}

func (r *Repo) mustGit(t testing.TB, args ...string) string {
	t.Helper()
	out, err := r.git(context.Background(), nil, args...)
	if err != nil {
		t.Fatalf("hubtest: %s: %v", r.id, err)
	}
	return strings.TrimSpace(string(out))
}

// git runs git in the repository with stdin, isolated from the user's and the system's configuration and from
// any GIT_ variable of the environment, and returns its standard output.
func (r *Repo) git(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	date := commitEpoch.Add(time.Duration(r.commits) * time.Second).Format(time.RFC3339)
	cmd.Env = append(cmd.Env, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=hubtest", "GIT_AUTHOR_EMAIL=hubtest@example.invalid",
		"GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_NAME=hubtest", "GIT_COMMITTER_EMAIL=hubtest@example.invalid",
		"GIT_COMMITTER_DATE="+date)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// lfsPointer returns the LFS pointer of content, as git-lfs writes it.
func lfsPointer(content string) string {
	sum := sha256.Sum256([]byte(content))
	return fmt.Sprintf(lfsVersionLine+"oid sha256:%s\nsize %d\n",
		hex.EncodeToString(sum[:]), len(content))
}
