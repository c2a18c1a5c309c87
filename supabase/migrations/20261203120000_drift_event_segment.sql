-- Segments (DRIFTLINE_SEGMENTS): a segment's drift event names its segment, e.g.
-- {"metadata.tenant": "acme"}; null for a model-level event. Events stored before this
-- migration keep theirs in raw: copied here once.
alter table public.drift_events add column if not exists segment jsonb;

update public.drift_events
   set segment = raw -> 'segment'
 where segment is null and jsonb_typeof(raw -> 'segment') = 'object';

-- "Which segments of this model drifted, newest first."
create index if not exists drift_events_model_segment_idx
    on public.drift_events (model_id, detected_at desc) where segment is not null;
create index if not exists drift_events_segment_gin_idx
    on public.drift_events using gin (segment jsonb_path_ops) where segment is not null;
