-- The raw ceiling on PostgreSQL: one transaction of 100 events with plain multi-row INSERT
-- into a table shaped like Assent's `events` (same keys and indexes), with no users, no
-- folding and no HTTP. Run by `bench/run.sh pg-ceiling` with pgbench; each transaction is
-- 100 events.
INSERT INTO events (org_id, user_key, seq, id, created_at, updated_at, status, regulation, body)
SELECT 'bench', (random() * 10000)::bigint, nextval('assent_event_seq'), gen_random_uuid()::text,
       (extract(epoch FROM now()) * 1000)::bigint, (extract(epoch FROM now()) * 1000)::bigint,
       0, 'gdpr', convert_to(repeat('x', 206), 'UTF8')
FROM generate_series(1, 100);
