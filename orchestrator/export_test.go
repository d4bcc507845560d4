package orchestrator

// RunAttemptStartSQL is the start's decision, for tests that look at what it reads.
const RunAttemptStartSQL = runAttemptStartSQL
