package orchestrator

// PayloadWholeMax is the largest body always stored as received. A larger body of a delivery that cannot
// trigger a run (a storage bucket's list of up to 10,000 changed files, a model's push) is recorded with its
// decision like any other, but keeping megabytes of it for every delivery would grow the deliveries table for
// nothing: it is stored shortened instead (hub.ShortenPayload), in at most as many bytes. The fields the
// orchestrator reads are in the delivery's columns either way.
const PayloadWholeMax = 64 << 10
