package orchestrator

import "context"

// RunAttemptStartSQL is the start's decision, for tests that look at what it reads.
var RunAttemptStartSQL = runAttemptStartSQL

// DeliveryInsertGroup writes the deliveries in one group transaction, as concurrent deliveries are, for tests
// that need a group of a known make-up.
func (s *Store) DeliveryInsertGroup(ctx context.Context, ps []DeliveryInsertParams) ([]*DeliveryInsertResult, error) {
	items := make([]*ingestItem, len(ps))
	for i, p := range ps {
		items[i] = newIngestItem(ctx, p)
	}
	if err := s.writeDeliveries(ctx, items); err != nil {
		return nil, err
	}
	res := make([]*DeliveryInsertResult, len(items))
	for i, it := range items {
		res[i] = it.res
	}
	return res, nil
}

// IngestWaiting returns how many deliveries wait for a group.
func (s *Store) IngestWaiting() int {
	s.ingest.mu.Lock()
	defer s.ingest.mu.Unlock()
	return len(s.ingest.pending)
}

// IngestWriters returns how many callers hold a writer's place.
func (s *Store) IngestWriters() int {
	s.ingest.mu.Lock()
	defer s.ingest.mu.Unlock()
	return s.ingest.writers
}

// IngestDeadlocks returns how many group writes PostgreSQL failed as a deadlock.
func (s *Store) IngestDeadlocks() int64 { return s.ingest.deadlocks.Load() }

// CachedMappings returns the enabled mappings as the copy that decides deliveries holds them, reading them
// first when it holds none.
func (s *Store) CachedMappings(ctx context.Context) ([]Mapping, error) {
	_, mappings, err := s.mappings.get(ctx, s)
	return mappings, err
}

// AuditListSQL is the statement of AuditList, for tests that look at what it reads.
var AuditListSQL = auditListSQL
