"""Ordered, versioned schema migrations.

Safe to run concurrently (a session-level advisory lock serialises runners) and repeatedly
(applied versions are recorded in ``pagerduty.schema_migrations`` and skipped). Each migration
runs in its own transaction together with its bookkeeping row. Never edit a released migration:
append a new one.

Roles (see roles.py): ``migrate`` is called on the master user's connection. It first creates or fixes the
cluster-wide roles (every run, not versioned), hands a schema the master created before the roles to
``pagerduty_owner``, then runs the migrations as ``pagerduty_owner`` (``SET ROLE``), so whatever a migration
creates belongs to the owner, and the default privileges of migration 4 give the loader and the reader their
rights on it. It leaves the connection's role as it found it.
"""

from __future__ import annotations

from . import analytics, roles
from .db import transaction

LOCK_KEY = 7_310_452_981_223_001  # arbitrary constant bigint for pg_advisory_lock

_DIM_COMMON = "is_stub boolean NOT NULL DEFAULT false, missing_since timestamptz, raw jsonb"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "base schema", [
        f"""CREATE TABLE pagerduty.teams (
            id text PRIMARY KEY, name text, description text, {_DIM_COMMON})""",
        f"""CREATE TABLE pagerduty.users (
            id text PRIMARY KEY, name text, email text, role text, time_zone text, {_DIM_COMMON})""",
        f"""CREATE TABLE pagerduty.escalation_policies (
            id text PRIMARY KEY, name text, {_DIM_COMMON})""",
        f"""CREATE TABLE pagerduty.priorities (
            id text PRIMARY KEY, name text, description text, color text, priority_order integer, {_DIM_COMMON})""",
        f"""CREATE TABLE pagerduty.services (
            id text PRIMARY KEY, name text, description text, status text,
            escalation_policy_id text REFERENCES pagerduty.escalation_policies (id),
            created_at timestamptz, {_DIM_COMMON})""",
        """CREATE TABLE pagerduty.incidents (
            id text PRIMARY KEY,
            incident_number bigint NOT NULL UNIQUE,
            title text,
            status text,
            urgency text,
            service_id text REFERENCES pagerduty.services (id),
            escalation_policy_id text REFERENCES pagerduty.escalation_policies (id),
            priority_id text REFERENCES pagerduty.priorities (id),
            created_at timestamptz NOT NULL,
            updated_at timestamptz,
            resolved_at timestamptz,
            last_status_change_at timestamptz,
            incident_key text,
            raw jsonb NOT NULL)""",
        "CREATE INDEX incidents_created_at_idx ON pagerduty.incidents (created_at)",
        "CREATE INDEX incidents_service_idx ON pagerduty.incidents (service_id)",
        """CREATE TABLE pagerduty.incident_assignments (
            incident_id text NOT NULL REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
            user_id text NOT NULL REFERENCES pagerduty.users (id),
            assigned_at timestamptz,
            PRIMARY KEY (incident_id, user_id))""",
        "CREATE INDEX incident_assignments_user_idx ON pagerduty.incident_assignments (user_id)",
        """CREATE TABLE pagerduty.incident_teams (
            incident_id text NOT NULL REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
            team_id text NOT NULL REFERENCES pagerduty.teams (id),
            PRIMARY KEY (incident_id, team_id))""",
        "CREATE INDEX incident_teams_team_idx ON pagerduty.incident_teams (team_id)",
        """CREATE TABLE pagerduty.log_entries (
            id text PRIMARY KEY,
            incident_id text NOT NULL REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
            type text NOT NULL,
            created_at timestamptz NOT NULL,
            agent_type text,
            agent_id text,
            channel_type text,
            raw jsonb NOT NULL)""",
        "CREATE INDEX log_entries_incident_idx ON pagerduty.log_entries (incident_id)",
        "CREATE INDEX log_entries_created_at_idx ON pagerduty.log_entries (created_at)",
        """CREATE TABLE pagerduty.notes (
            id text PRIMARY KEY,
            incident_id text NOT NULL REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
            user_id text REFERENCES pagerduty.users (id),
            content text,
            created_at timestamptz,
            raw jsonb NOT NULL)""",
        "CREATE INDEX notes_incident_idx ON pagerduty.notes (incident_id)",
        """CREATE TABLE pagerduty.alerts (
            id text PRIMARY KEY,
            incident_id text NOT NULL REFERENCES pagerduty.incidents (id) ON DELETE CASCADE,
            status text,
            alert_key text,
            severity text,
            service_id text REFERENCES pagerduty.services (id),
            created_at timestamptz,
            raw jsonb NOT NULL)""",
        "CREATE INDEX alerts_incident_idx ON pagerduty.alerts (incident_id)",
        # lz4 TOAST compression for the raw documents where the server supports it (much cheaper than pglz)
        """DO $$
           DECLARE t text;
           BEGIN
             IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                          AND 'lz4' = ANY(enumvals)) THEN
               FOREACH t IN ARRAY ARRAY['incidents', 'log_entries', 'notes', 'alerts', 'services', 'teams', 'users',
                                        'escalation_policies', 'priorities'] LOOP
                 EXECUTE format('ALTER TABLE pagerduty.%I ALTER COLUMN raw SET COMPRESSION lz4', t);
               END LOOP;
             END IF;
           END $$""",
        """CREATE TABLE pagerduty.pipeline_runs (
            run_id bigserial PRIMARY KEY,
            execution_id text NOT NULL UNIQUE,
            execution_name text,
            scope text,
            window_since timestamptz,
            window_until timestamptz,
            filters jsonb,
            status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
            step text,
            error text,
            message text,
            counts jsonb NOT NULL DEFAULT '{}'::jsonb,
            input jsonb,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz)""",
        """CREATE TABLE pagerduty.validation_results (
            run_id bigint NOT NULL REFERENCES pagerduty.pipeline_runs (run_id) ON DELETE CASCADE,
            check_name text NOT NULL,
            passed boolean NOT NULL,
            blocking boolean NOT NULL,
            details jsonb,
            checked_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, check_name))""",
        """CREATE TABLE pagerduty.watermarks (
            scope text PRIMARY KEY,
            watermark timestamptz NOT NULL,
            run_id bigint REFERENCES pagerduty.pipeline_runs (run_id),
            updated_at timestamptz NOT NULL DEFAULT now())""",
    ]),
    (2, "reporting view", [
        """CREATE VIEW pagerduty.incident_overview AS
           SELECT i.id, i.incident_number, i.title, i.status, i.urgency, i.created_at, i.resolved_at,
                  i.resolved_at - i.created_at AS time_to_resolve,
                  s.name AS service_name, p.name AS priority_name, e.name AS escalation_policy_name
             FROM pagerduty.incidents i
             LEFT JOIN pagerduty.services s ON s.id = i.service_id
             LEFT JOIN pagerduty.priorities p ON p.id = i.priority_id
             LEFT JOIN pagerduty.escalation_policies e ON e.id = i.escalation_policy_id""",
    ]),
    (3, "coverage, one run at a time, odd records, notes by id", [
        # values the API can return: a null incident number or log entry type must not wedge a load
        "ALTER TABLE pagerduty.incidents ALTER COLUMN incident_number DROP NOT NULL",
        "ALTER TABLE pagerduty.log_entries ALTER COLUMN type DROP NOT NULL",
        "ALTER TABLE pagerduty.log_entries ADD COLUMN note_fetched_at timestamptz",
        """CREATE INDEX log_entries_note_pending_idx ON pagerduty.log_entries (incident_id)
             WHERE type = 'annotate_log_entry' AND note_fetched_at IS NULL""",
        "ALTER TABLE pagerduty.pipeline_runs DROP CONSTRAINT pipeline_runs_status_check",
        """ALTER TABLE pagerduty.pipeline_runs ADD CONSTRAINT pipeline_runs_status_check
             CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'timed_out', 'aborted'))""",
        "ALTER TABLE pagerduty.pipeline_runs ADD COLUMN deadline timestamptz",
        "ALTER TABLE pagerduty.pipeline_runs ADD COLUMN coverage jsonb",
        # runs left 'running' by the code before this migration: the newest keeps its claim until the next
        # start reconciles it, the older ones cannot be running any more
        """UPDATE pagerduty.pipeline_runs SET status = 'aborted', error = 'reconciled',
                  message = 'left running before runs were locked', finished_at = now(), updated_at = now()
            WHERE status = 'running'
              AND run_id <> (SELECT max(run_id) FROM pagerduty.pipeline_runs WHERE status = 'running')""",
        "CREATE UNIQUE INDEX pipeline_runs_one_running ON pagerduty.pipeline_runs ((true)) WHERE status = 'running'",
        "ALTER TABLE pagerduty.validation_results ADD COLUMN severity text",
        "ALTER TABLE pagerduty.validation_results ADD COLUMN failures bigint",
        """CREATE TABLE pagerduty.run_windows (
            run_id bigint NOT NULL REFERENCES pagerduty.pipeline_runs (run_id) ON DELETE CASCADE,
            since timestamptz NOT NULL,
            until timestamptz NOT NULL,
            incidents_total bigint NOT NULL,
            log_entries_total bigint NOT NULL,
            log_entries_filtered_out bigint NOT NULL DEFAULT 0,
            loaded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, since),
            CHECK (since < until))""",
        """CREATE TABLE pagerduty.coverage (
            scope text NOT NULL,
            since timestamptz NOT NULL,
            until timestamptz NOT NULL,
            run_id bigint NOT NULL REFERENCES pagerduty.pipeline_runs (run_id),
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, since, until),
            CHECK (since < until))""",
    ]),
    # The role names are written out: a released migration's text must not change (roles.py holds the same names).
    (4, "roles by job", [
        # the loader reads and writes the tables (not schema_migrations) and uses the sequences; the reader reads
        "GRANT USAGE ON SCHEMA pagerduty TO pagerduty_loader, pagerduty_error_recorder, pagerduty_reader",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pagerduty TO pagerduty_loader",
        "REVOKE INSERT, UPDATE, DELETE ON pagerduty.schema_migrations FROM pagerduty_loader",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA pagerduty TO pagerduty_loader",
        "GRANT SELECT ON ALL TABLES IN SCHEMA pagerduty TO pagerduty_reader",
        # the same on what later migrations create (they run as the owner)
        """ALTER DEFAULT PRIVILEGES FOR ROLE pagerduty_owner IN SCHEMA pagerduty
              GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO pagerduty_loader""",
        """ALTER DEFAULT PRIVILEGES FOR ROLE pagerduty_owner IN SCHEMA pagerduty
              GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO pagerduty_loader""",
        """ALTER DEFAULT PRIVILEGES FOR ROLE pagerduty_owner IN SCHEMA pagerduty
              GRANT SELECT ON TABLES TO pagerduty_reader""",
        # a function the owner creates is nobody else's to call unless granted (PUBLIC may execute by default)
        "ALTER DEFAULT PRIVILEGES FOR ROLE pagerduty_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        # The one way to record a failure (runs.record_failure/mark_failed, the error handler): the run given, else
        # the execution's; a run reconciled as timed_out or aborted keeps that status. Runs with the owner's rights,
        # so the error recorder needs no table privilege.
        """CREATE FUNCTION pagerduty.record_run_failure(p_execution_id text, p_run_id bigint, p_step text,
                                                       p_error text, p_message text,
                                                       OUT run_id bigint, OUT recorded boolean)
           LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
           AS $fn$
             WITH target AS (
               SELECT coalesce(p_run_id, (SELECT r.run_id FROM pagerduty.pipeline_runs r
                                           WHERE r.execution_id = p_execution_id)) AS run_id),
             marked AS (
               UPDATE pagerduty.pipeline_runs r
                  SET status = 'failed', step = coalesce(p_step, r.step), error = p_error, message = p_message,
                      finished_at = pg_catalog.now(), updated_at = pg_catalog.now()
                 FROM target t
                WHERE r.run_id = t.run_id AND r.status NOT IN ('timed_out', 'aborted')
               RETURNING r.run_id)
             SELECT t.run_id, EXISTS (SELECT 1 FROM marked) FROM target t
           $fn$""",
        "REVOKE ALL ON FUNCTION pagerduty.record_run_failure(text, bigint, text, text, text) FROM PUBLIC",
        """GRANT EXECUTE ON FUNCTION pagerduty.record_run_failure(text, bigint, text, text, text)
              TO pagerduty_error_recorder, pagerduty_loader""",
    ]),
    (5, "record the end of an execution no Catch saw", [
        # The error handler, on EventBridge's "Step Functions Execution Status Change" (FAILED, TIMED_OUT, ABORTED):
        # the run of that execution ends with that status, if it is still running. A run the Catch path already
        # failed keeps its more precise error (the event comes after it); a finished run is never changed; an
        # execution without a run (its input refused before step 1 wrote one) records nothing. Returns the run
        # (or NULL), whether it changed, and the status it has now. The owner's rights, like record_run_failure.
        """CREATE FUNCTION pagerduty.record_run_ended(p_execution_id text, p_status text, p_error text,
                                                     p_message text, OUT run_id bigint, OUT recorded boolean,
                                                     OUT run_status text)
           LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
           AS $fn$
           BEGIN
             IF p_status IS NULL OR p_status NOT IN ('failed', 'timed_out', 'aborted') THEN
               RAISE EXCEPTION 'record_run_ended: status must be failed, timed_out or aborted, got %',
                               coalesce(p_status, 'NULL') USING ERRCODE = 'invalid_parameter_value';
             END IF;
             UPDATE pagerduty.pipeline_runs r
                SET status = p_status, error = p_error, message = p_message, finished_at = pg_catalog.now(),
                    updated_at = pg_catalog.now()
              WHERE r.execution_id = p_execution_id AND r.status = 'running'
             RETURNING r.run_id, r.status INTO run_id, run_status;
             recorded := FOUND;
             IF NOT recorded THEN
               SELECT r.run_id, r.status INTO run_id, run_status
                 FROM pagerduty.pipeline_runs r WHERE r.execution_id = p_execution_id;
             END IF;
           END
           $fn$""",
        "REVOKE ALL ON FUNCTION pagerduty.record_run_ended(text, text, text, text) FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION pagerduty.record_run_ended(text, text, text, text) TO pagerduty_error_recorder",
    ]),
    # Schema analytics: the views of docs/analytics.md, the working-hours setting, readable by the reader only.
    (6, "analytics views", analytics.MIGRATION_6),
]


def migrate(conn) -> list[int]:
    """Bring the roles and the schema up to date; returns the versions applied by this call."""
    applied_now: list[int] = []
    conn.run("SELECT pg_advisory_lock(:k)", k=LOCK_KEY)
    try:
        previous_role = roles.current_role_setting(conn)
        try:
            if previous_role != "none":
                roles.set_role(conn, None)  # the roles are the login (master) user's to create and grant
            roles.ensure_roles(conn)
            roles.take_over_schema(conn)
            for schema in (roles.SCHEMA, analytics.SCHEMA):  # the owner may not create schemas in the database
                conn.run(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {roles.OWNER}")
            roles.set_role(conn, roles.OWNER)
            conn.run("""CREATE TABLE IF NOT EXISTS pagerduty.schema_migrations (
                            version integer PRIMARY KEY, name text NOT NULL,
                            applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {r[0] for r in conn.run("SELECT version FROM pagerduty.schema_migrations")}
            for version, name, statements in MIGRATIONS:
                if version in done:
                    continue
                with transaction(conn):
                    for sql in statements:
                        conn.run(sql)
                    conn.run("INSERT INTO pagerduty.schema_migrations (version, name) VALUES (:v, :n)",
                             v=version, n=name)
                applied_now.append(version)
        finally:
            try:
                roles.set_role(conn, previous_role)
            except Exception:  # noqa: BLE001 - connection gone: the role setting went with the session
                pass
    finally:
        try:
            conn.run("SELECT pg_advisory_unlock(:k)", k=LOCK_KEY)
        except Exception:  # noqa: BLE001 - connection gone: the lock went with the session
            pass
    return applied_now
