package orchestrator

import (
	"context"
	"fmt"
	"sync"
)

// mappingCache keeps the enabled mappings in memory with the generation they were read at, for deciding
// deliveries. A statement trigger bumps the generation on every write to mappings; the statement that records
// deliveries also reads the current generation, so a stale copy is detected in the same round trip and the
// deliveries are decided again: no delivery is ever decided against mappings older than its own transaction.
type mappingCache struct {
	mu         sync.Mutex
	loaded     bool
	generation int64
	mappings   []Mapping
}

// mappingGenerationSQL reads the generation of the mappings.
const mappingGenerationSQL = `SELECT generation FROM mapping_generation`

// get returns the cached mappings and their generation, reading them through s first when needed.
func (c *mappingCache) get(ctx context.Context, s *Store) (int64, []Mapping, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded {
		return c.generation, c.mappings, nil
	}
	// The generation is read before the mappings: a change between the two reads makes the copy look stale,
	// never fresh.
	var gen int64
	if err := s.pool.QueryRow(ctx, mappingGenerationSQL).Scan(&gen); err != nil {
		return 0, nil, fmt.Errorf("read mapping generation: %w", err)
	}
	mappings, err := s.MappingListEnabled(ctx)
	if err != nil {
		return 0, nil, err
	}
	c.loaded, c.generation, c.mappings = true, gen, mappings
	return gen, mappings, nil
}

// forget drops the copy if it is still the one read at generation gen.
func (c *mappingCache) forget(gen int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && c.generation == gen {
		c.loaded, c.mappings = false, nil
	}
}
