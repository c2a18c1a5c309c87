-- driftline store, schema 1.
--
-- Runs as is with the Supabase CLI (`supabase db push` / `supabase migration up`), with
-- `driftline migrate` (streams/store/migrate.py, same ledger table as the CLI) and on plain
-- PostgreSQL + pgvector. Every statement is re-runnable: applying this file twice is a no-op.
--
-- Access model:
--   * RLS is enabled on every table and no policy grants anything to `anon` or
--     `authenticated`; their table privileges are revoked too (belt and braces), so the
--     public PostgREST API exposes nothing.
--   * The backend writes as `service_role` (Supabase REST with the service key; it bypasses
--     RLS) or as a login role that is a member of `driftline_writer` (direct Postgres): that
--     role may select/insert/update, never delete or truncate, through explicit policies.
--   * Supabase's roles are not created here: on Supabase they exist, on plain Postgres the
--     grants that mention them are skipped (guarded DO blocks).

-- pgvector: in Supabase's `extensions` schema when there is one (Supabase's convention,
-- on every role's search_path there), else in the default schema.
do $$
begin
    if exists (select 1 from pg_namespace where nspname = 'extensions') then
        create extension if not exists vector with schema extensions;
    else
        create extension if not exists vector;
    end if;
end
$$;

-- Drift events (driftline.drift-events), one row per drift_id: a replayed or re-emitted
-- event never makes a second row. `decision_id` is set once the retrain policy decided.
create table if not exists public.drift_events (
    drift_id          text primary key,
    schema_version    integer not null default 1,
    model_id          text not null,
    model_version     text,
    kind              text not null check (kind in ('embedding', 'behavior', 'accuracy')),
    signal            text not null,
    detector          text not null,
    trigger_event_id  text,
    detected_at       timestamptz not null,
    baseline          double precision,
    "current"         double precision,
    severity          double precision not null default 0,
    raw               jsonb not null,
    decision_id       text,
    stored_at         timestamptz not null default now()
);
create index if not exists drift_events_model_detected_idx
    on public.drift_events (model_id, detected_at desc);
create index if not exists drift_events_detected_idx
    on public.drift_events (detected_at desc);
create index if not exists drift_events_undecided_idx
    on public.drift_events (model_id) where decision_id is null;

-- Every decision of the retrain policy, acted on or not, with its reason.
create table if not exists public.retrain_decisions (
    decision_id    text primary key,
    model_id       text not null,
    model_version  text,
    action         text check (action in ('retrain', 'reindex', 'alert')),
    outcome        text not null,
    reason         text not null,
    drift_ids      text[] not null,
    kinds          text[] not null default '{}',
    max_severity   double precision not null default 0,
    decided_at     timestamptz not null,
    stored_at      timestamptz not null default now()
);
create index if not exists retrain_decisions_model_decided_idx
    on public.retrain_decisions (model_id, decided_at desc);
create index if not exists retrain_decisions_outcome_idx
    on public.retrain_decisions (outcome, decided_at desc);

-- Retrain / re-index / alert jobs (job_id = the decision's action id) and their life:
-- requested -> running -> succeeded | failed.
create table if not exists public.retrain_jobs (
    job_id            text primary key,
    decision_id       text not null,
    model_id          text not null,
    model_version     text,
    action            text not null check (action in ('retrain', 'reindex', 'alert')),
    state             text not null default 'requested'
                      check (state in ('requested', 'running', 'succeeded', 'failed')),
    drift_ids         text[] not null default '{}',
    detail            jsonb not null default '{}'::jsonb,
    deployed_version  text,
    requested_at      timestamptz not null,
    updated_at        timestamptz not null default now()
);
create index if not exists retrain_jobs_model_state_idx
    on public.retrain_jobs (model_id, state);
create index if not exists retrain_jobs_state_updated_idx
    on public.retrain_jobs (state, updated_at desc);

-- One row per (job, state): recording a transition twice is a no-op.
create table if not exists public.retrain_job_transitions (
    job_id  text not null references public.retrain_jobs (job_id) on delete cascade,
    state   text not null check (state in ('requested', 'running', 'succeeded', 'failed')),
    at      timestamptz not null default now(),
    detail  jsonb not null default '{}'::jsonb,
    primary key (job_id, state)
);
create index if not exists retrain_job_transitions_at_idx
    on public.retrain_job_transitions (at desc);

-- Deployed model versions; the baseline of a version starts at its deploy.
create table if not exists public.model_versions (
    model_id             text not null,
    model_version        text not null,
    deployed_at          timestamptz not null default now(),
    baseline_started_at  timestamptz not null default now(),
    baseline             jsonb,
    primary key (model_id, model_version)
);
create index if not exists model_versions_model_deployed_idx
    on public.model_versions (model_id, deployed_at desc);

-- Logged interactions (sampled). `embedding` is an untyped `vector`: the dimension is
-- fixed per model but differs between models (8..4096), so one table holds them all.
-- A similarity index is per model and dimension, e.g.
--   create index on interactions using hnsw ((embedding::vector(384)) vector_cosine_ops)
--     where model_id = 'my-model';
-- and queries use the same cast and predicate.
create table if not exists public.interactions (
    event_id       text primary key,
    model_id       text not null,
    model_version  text,
    ts             timestamptz not null,
    latency_ms     double precision,
    input_tokens   integer,
    output_tokens  integer,
    refusal        boolean,
    feedback       smallint,
    correct        boolean,
    embedding      vector,
    metadata       jsonb,
    logged_at      timestamptz not null default now()
);
create index if not exists interactions_model_ts_idx
    on public.interactions (model_id, ts desc);

-- Row level security on every table.
alter table public.drift_events            enable row level security;
alter table public.retrain_decisions       enable row level security;
alter table public.retrain_jobs            enable row level security;
alter table public.retrain_job_transitions enable row level security;
alter table public.model_versions          enable row level security;
alter table public.interactions            enable row level security;

-- The least-privilege writer role for direct Postgres connections.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'driftline_writer') then
        create role driftline_writer nologin;
    end if;
end
$$;

do $$
declare
    t text;
    r text;
begin
    foreach t in array array['drift_events', 'retrain_decisions', 'retrain_jobs',
                             'retrain_job_transitions', 'model_versions', 'interactions']
    loop
        -- Public API roles: nothing at all (Supabase grants them everything by default).
        foreach r in array array['anon', 'authenticated'] loop
            if exists (select 1 from pg_roles where rolname = r) then
                execute format('revoke all on table public.%I from %I', t, r);
            end if;
        end loop;
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant select, insert, update on table public.%I to service_role', t);
        end if;
        execute format('grant select, insert, update on table public.%I to driftline_writer', t);
        if not exists (select 1 from pg_policies
                       where schemaname = 'public' and tablename = t
                         and policyname = 'driftline_writer_all') then
            execute format('create policy driftline_writer_all on public.%I for all '
                           'to driftline_writer using (true) with check (true)', t);
        end if;
    end loop;
    if exists (select 1 from pg_namespace where nspname = 'public') then
        grant usage on schema public to driftline_writer;
    end if;
end
$$;
