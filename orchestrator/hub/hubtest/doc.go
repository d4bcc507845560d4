// Package hubtest is a stand-in Hugging Face Hub for tests: an httptest server that answers the dataset endpoints
// the orchestrator reads, from real git repositories built in the test with the git command.
//
// A Repo is one dataset, a git repository in a temporary directory: Write, WriteLFS, Remove and Rename change its
// files, Commit records them on the current branch, Branch and Checkout move between branches. Every blob id,
// tree id and commit id the server reports is git's own (git ls-tree, git log). An LFS file is committed as its
// pointer text, as git-lfs would, so its "oid" is the pointer's blob id, its "size" the content's size, and its
// "lfs" {oid: sha256 of the content, size, pointerSize} the way the Hub reports it; git-lfs itself is not needed.
//
// A Server (NewServer) answers, for the repositories it was given:
//
//	GET  /api/datasets/{id}                          {"_id", "id", "sha" (the head of main), "private", "siblings"}
//	GET  /api/datasets/{id}/refs                     {"branches", "tags", "converts"}, each {name, ref, targetCommit}
//	GET  /api/datasets/{id}/revision/{rev}[?blobs=true] {"_id", "id", "sha", "siblings": [{rfilename[, blobId, size, lfs]}]}
//	GET  /api/datasets/{id}/tree/{rev}[/{path}]      [{type, oid, size, path[, lfs]}], recursive=true for every level,
//	                                                 in pages (SetPageSize, 1,000 by default) linked by Link rel="next"
//	POST /api/datasets/{id}/paths-info/{rev}         the same entries for the paths named by the form or JSON "paths"
//	GET  /api/datasets/{id}/commits/{rev}            [{id, title, message, date, authors: [{user}]}], newest first, in
//	                                                 pages linked by Link rel="next" like the tree
//
// A JobsServer (NewJobsServer; MountJobs puts it on a Server too, so datasets and Jobs share one endpoint) is a
// stand-in Hugging Face Jobs API, shaped after huggingface_hub's run_job, inspect_job, list_jobs, cancel_job,
// fetch_job_logs and list_jobs_hardware:
//
//	POST /api/jobs/{ns}                {dockerImage | spaceId, command, arguments, environment, secrets, flavor,
//	                                   timeoutSeconds, labels, volumes} -> the Job: {id, createdAt, ..., secrets
//	                                   by name only, status: {stage, message}, owner: {id, name, type}}
//	GET  /api/jobs/{ns}[?label=k=v&stage=S]  the Jobs, by creation, in pages (SetPageSize) linked by Link rel="next"
//	GET  /api/jobs/{ns}/{id}           the Job
//	POST /api/jobs/{ns}/{id}/cancel    kills its process group; CANCELED; a no-op once it ended
//	GET  /api/jobs/{ns}/{id}/logs      server-sent events from the first line: data: {"data", "timestamp"}, a
//	                                   "===== Job started at ... =====" banner first, ": keep-alive" comments
//	GET  /api/jobs/hardware            [{name, prettyName, cpu, ram, unitCostMicroUSD, unitCostUSD, unitLabel}]
//
// Each Job's command runs as a local process in a process group of its own (killed with the test process too),
// in a directory of its own, with PATH, HOME and the Job's environment and secrets as its only environment. A
// Job goes SCHEDULING (held there by HoldScheduling until Release) -> RUNNING -> COMPLETED, or ERROR with
// "exit code N", or "Job timeout" once timeoutSeconds (30 minutes when absent) passed; the whole process group
// is killed when the main process ends, on timeout, on cancel and when the test ends. Faults: FailCreates (create
// the Job, answer 500), RateLimit (429 with Retry-After), DropLogStreams (break a stream after N lines),
// KeepLogStreamsOpen (no end after the last line), Delete (the Job deleted on the Hub: DELETED), and the bearer
// token NewJobsServer was given (401 without).
//
// What the JobsServer does not model: containers and images (the command runs on the test's machine, the image
// and Space are only recorded), volumes (recorded, not mounted), flavors' hardware (recorded; the prices are
// illustrative), stages other than those above, scheduled Jobs, the Hub's id and cursor formats, log lines the Hub
// itself adds other than the banner, and a 401 versus 403 distinction.
//
// {rev} is one path segment (URL-escaped): a full commit id, a branch or tag name, or a full ref name
// (refs/heads/main). An unknown repository, revision or path answers 404 with {"error": "..."} and an
// X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound). SetPrivate makes a repository answer 401
// without its token; Fail injects faults (a status with an optional Retry-After, or a hang) on matching paths;
// Requests counts what was asked.
//
// What it does not model: models, spaces and buckets; the 401 the Hub answers an anonymous request for an unknown
// repository (ours is 404); writes of any kind (commits are made with the Repo, not through the API); expand=true
// (no lastCommit or security fields, and pages keep their size); xetHash; short commit ids and refs/pr/N or
// refs/convert/... revisions; gated repositories; rate limits other than the injected faults; the Hub's own
// cursor format (ours is an opaque offset); the order of entries (ours is git's); a .gitattributes that marks LFS
// files (a pointer is recognised by its text alone).
package hubtest
