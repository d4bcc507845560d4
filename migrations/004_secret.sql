-- Which configured webhook secret authenticated a delivery: 'current', or 'previous' during a rotation.
ALTER TABLE deliveries ADD COLUMN secret text NOT NULL DEFAULT 'current';
