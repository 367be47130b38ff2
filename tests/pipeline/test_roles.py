"""Roles by job (roles.py), on the real PostgreSQL: what the migrations create, and what each role may and may not
do when it logs in. A refusal must be PostgreSQL's permission error (SQLSTATE 42501), not any error."""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from pg8000.exceptions import DatabaseError
from pg8000.native import literal

from pagerduty_pipeline import migrations, roles, runs, steps
from pagerduty_pipeline.migrations import MIGRATIONS, migrate
from tests.pipeline.conftest import envelope, make_env
from tests.pipeline.test_load import WEEK
from tests.support.postgres import drop_pipeline_schemas

ROLE_NAMES = [roles.OWNER, roles.LOADER, roles.ERROR_RECORDER, roles.READER]
PASSWORD = "role-test-" + uuid.uuid4().hex[:12]
FUNCTION = "pagerduty.record_run_failure(text, bigint, text, text, text)"
ENDED_FUNCTION = "pagerduty.record_run_ended(text, text, text, text)"
RECORDER_FUNCTIONS = (FUNCTION, ENDED_FUNCTION)  # all the error recorder may execute
LATEST = MIGRATIONS[-1][0]
INSUFFICIENT_PRIVILEGE = "42501"


@contextlib.contextmanager
def admin(pg):
    conn = pg.admin_connect()
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def passwords(pg, *names: str):
    """The login roles `names` log in with PASSWORD while inside (as a harness would give them; on RDS: IAM tokens);
    their own passwords are put back afterwards (others may have given them theirs for the session)."""
    with admin(pg) as a:
        saved = a.run("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(CAST(:n AS text[]))",
                      n=list(names))
        for name in names:
            a.run(f"ALTER ROLE {name} PASSWORD '{PASSWORD}'")
        try:
            yield
        finally:
            restore_passwords(a, saved)


def restore_passwords(a, saved) -> None:
    for name, verifier in saved:  # a SCRAM verifier given as the password is stored as it is
        a.run(f"ALTER ROLE {name} PASSWORD {literal(verifier) if verifier else 'NULL'}")


@contextlib.contextmanager
def login_as(pg, role: str):
    """A connection that logged in as `role`."""
    with passwords(pg, role):
        conn = pg.connect(user=role, password=PASSWORD)
    try:
        assert conn.run("SELECT current_user, session_user") == [[role, role]]
        yield conn
    finally:
        conn.close()


def denied(conn, sql: str, **params) -> str:
    """`sql` must fail with PostgreSQL's permission error; returns its message."""
    with pytest.raises(DatabaseError) as exc:
        conn.run(sql, **params)
    err = exc.value.args[0]
    assert err.get("C") == INSUFFICIENT_PRIVILEGE, (sql, err)
    return err["M"]


def relations(conn, kinds=("r", "p", "v", "m")) -> list[str]:
    return [r[0] for r in conn.run(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pagerduty' AND c.relkind = ANY(CAST(:k AS char[])) ORDER BY 1", k=list(kinds))]


# the schemas the migrations create (either may not exist yet)
ALL_VERSIONS = [v for v, _, _ in MIGRATIONS]
OUR_SCHEMAS = "(SELECT oid FROM pg_namespace WHERE nspname IN ('pagerduty', 'analytics'))"


def not_owned_by_owner(conn) -> list:
    """Everything in schemas pagerduty and analytics (and the schemas) that pagerduty_owner does not own."""
    return conn.run(f"""
        SELECT 'schema', nspname::text, nspowner::regrole::text FROM pg_namespace
         WHERE nspname IN ('pagerduty', 'analytics') AND nspowner <> 'pagerduty_owner'::regrole
        UNION ALL
        SELECT 'relation ' || c.relkind::text, c.relname::text, c.relowner::regrole::text FROM pg_class c
         WHERE c.relnamespace IN {OUR_SCHEMAS} AND c.relowner <> 'pagerduty_owner'::regrole
        UNION ALL
        SELECT 'function', p.proname::text, p.proowner::regrole::text FROM pg_proc p
         WHERE p.pronamespace IN {OUR_SCHEMAS} AND p.proowner <> 'pagerduty_owner'::regrole
        UNION ALL
        SELECT 'type', t.typname::text, t.typowner::regrole::text FROM pg_type t
         WHERE t.typnamespace IN {OUR_SCHEMAS} AND t.typowner <> 'pagerduty_owner'::regrole""")


def catalog_state(a) -> dict:
    """What migrate may change, read as the superuser: roles (with their passwords), memberships, owners and
    privileges in the schema, default privileges."""
    names = ROLE_NAMES + ["rds_iam"]
    return {
        "roles": a.run("""SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolinherit,
                                 rolpassword FROM pg_authid WHERE rolname = ANY(CAST(:n AS text[])) ORDER BY 1""",
                       n=names),
        "members": a.run("""SELECT roleid::regrole::text, member::regrole::text, grantor::regrole::text,
                                   admin_option FROM pg_auth_members
                             WHERE roleid::regrole::text = ANY(CAST(:n AS text[]))
                                OR member::regrole::text = ANY(CAST(:n AS text[])) ORDER BY 1, 2, 3""", n=names),
        "schema": a.run("SELECT nspowner::regrole::text, nspacl::text FROM pg_namespace WHERE nspname = 'pagerduty'"),
        "relations": a.run("""SELECT relname, relowner::regrole::text, relacl::text FROM pg_class
                               WHERE relnamespace = 'pagerduty'::regnamespace ORDER BY 1"""),
        "functions": a.run("""SELECT proname, proowner::regrole::text, proacl::text, prosecdef, proconfig
                               FROM pg_proc WHERE pronamespace = 'pagerduty'::regnamespace ORDER BY 1"""),
        "default_acl": a.run("""SELECT defaclrole::regrole::text, defaclnamespace::regnamespace::text, defaclobjtype,
                                       defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3"""),
        "migrations": a.run("SELECT version, name, applied_at FROM pagerduty.schema_migrations ORDER BY 1"),
    }


@pytest.fixture
def no_roles(pg):
    """Start from a cluster without the four roles (they are cluster-wide: earlier tests created them); afterwards
    they exist again, with the passwords they had."""
    with admin(pg) as a:
        saved = a.run("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(CAST(:n AS text[]))",
                      n=ROLE_NAMES)
        drop_pipeline_schemas(a)
        existing = [r[0] for r in saved]
        if existing:
            a.run(f"DROP OWNED BY {', '.join(existing)}")  # default privileges and grants in this database
            for role in existing:
                a.run(f"DROP ROLE {role}")
    yield
    conn = pg.connect()
    try:
        roles.ensure_roles(conn)
    finally:
        conn.close()
    with admin(pg) as a:
        restore_passwords(a, saved)


def old_migrate(conn) -> None:
    """How the code before the roles migrated (as the master user): migrations 1-3."""
    conn.run("CREATE SCHEMA IF NOT EXISTS pagerduty")
    conn.run("""CREATE TABLE IF NOT EXISTS pagerduty.schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
    for version, name, statements in MIGRATIONS[:3]:
        for sql in statements:
            conn.run(sql)
        conn.run("INSERT INTO pagerduty.schema_migrations (version, name) VALUES (:v, :n)", v=version, n=name)


def add_run(conn, execution_id: str, status: str = "running") -> int:
    return conn.run("""INSERT INTO pagerduty.pipeline_runs (execution_id, status, step) VALUES (:e, :s, 'lambda_1')
                       RETURNING run_id""", e=execution_id, s=status)[0][0]


# -- what migrate creates ------------------------------------------------------------------------------------------

def test_migrate_on_an_empty_database_creates_the_roles_and_the_owner_owns_everything(pg, db, no_roles):
    assert migrate(db) == [v for v, _, _ in MIGRATIONS]
    assert [v for v, _, _ in MIGRATIONS][-1] == 6
    shape = {r[0]: r[1:] for r in db.run(
        """SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls,
                  pg_has_role(rolname, 'rds_iam', 'MEMBER'), pg_has_role(current_user, rolname, 'USAGE')
             FROM pg_roles WHERE rolname = ANY(CAST(:n AS text[]))""", n=ROLE_NAMES)}
    #                      login  super  createrole createdb bypassrls rds_iam master has its rights
    assert shape == {roles.OWNER: [False, False, False, False, False, False, True],
                     roles.LOADER: [True, False, False, False, False, True, True],
                     roles.ERROR_RECORDER: [True, False, False, False, False, True, False],
                     roles.READER: [False, False, False, False, False, False, False]}
    assert not_owned_by_owner(db) == []
    assert {"pipeline_runs", "incidents", "schema_migrations", "incident_overview"} <= set(relations(db))
    assert db.run("SELECT count(*) FROM pg_class WHERE relnamespace = 'pagerduty'::regnamespace")[0][0] > 40
    # the failure recorders: the owner's rights, a fixed search path, callable by the loader (record_run_failure
    # only) and the recorder
    for function in RECORDER_FUNCTIONS:
        assert db.run(f"""SELECT prosecdef, proconfig, proowner::regrole::text FROM pg_proc
                           WHERE oid = CAST('{function}' AS regprocedure)""") == [
            [True, ["search_path=pg_catalog, pg_temp"], roles.OWNER]], function
    privileges = {(r[0], r[1]): r[2] for r in db.run(
        "SELECT r, f, has_function_privilege(r, f, 'EXECUTE') FROM unnest(CAST(:n AS text[])) r, "
        "unnest(CAST(:f AS text[])) f", n=[roles.LOADER, roles.ERROR_RECORDER, roles.READER, "rds_iam", "public"],
        f=list(RECORDER_FUNCTIONS))}
    assert privileges == {
        (roles.LOADER, FUNCTION): True, (roles.ERROR_RECORDER, FUNCTION): True, (roles.READER, FUNCTION): False,
        ("rds_iam", FUNCTION): False, ("public", FUNCTION): False,
        (roles.LOADER, ENDED_FUNCTION): False, (roles.ERROR_RECORDER, ENDED_FUNCTION): True,
        (roles.READER, ENDED_FUNCTION): False, ("rds_iam", ENDED_FUNCTION): False, ("public", ENDED_FUNCTION): False}
    # and nothing else in the schema is the recorder's to execute
    assert db.run("""SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'pagerduty'::regnamespace
                        AND has_function_privilege(:r, p.oid, 'EXECUTE') ORDER BY 1""", r=roles.ERROR_RECORDER) == \
        db.run(f"SELECT oid FROM pg_proc WHERE oid IN (CAST('{FUNCTION}' AS regprocedure), "
               f"CAST('{ENDED_FUNCTION}' AS regprocedure)) ORDER BY 1")
    assert db.run("SELECT current_user, current_setting('role')") == [[pg.user, "none"]]  # left as found


def test_migrate_leaves_the_connections_role_as_it_found_it_also_on_error(pg, db, monkeypatch):
    migrate(db)
    db.run(f"SET ROLE {roles.LOADER}")
    assert migrate(db) == []  # the roles and the takeover ran as the master, not as the loader
    assert db.run("SELECT current_user") == [[roles.LOADER]]
    db.run("RESET ROLE")
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, (LATEST + 1, "broken", ["SELECT 1/0"])])
    with pytest.raises(DatabaseError):
        migrate(db)
    assert db.run("SELECT current_user, current_setting('role')") == [[pg.user, "none"]]
    assert db.run("SELECT max(version) FROM pagerduty.schema_migrations") == [[LATEST]]


def test_migrate_again_is_a_no_op(pg, db):
    migrate(db)
    with admin(pg) as a:
        before = catalog_state(a)
        assert migrate(db) == []
        assert catalog_state(a) == before


def test_roles_created_beforehand_with_passwords_are_used_and_kept(pg, db, no_roles):
    db.run(f"CREATE ROLE {roles.LOADER} LOGIN PASSWORD '{PASSWORD}'")  # the master, before the migrations
    db.run(f"CREATE ROLE {roles.OWNER} LOGIN")  # the wrong shape: nobody may log in as the owner
    with admin(pg) as a:  # and some pre-created by someone else
        a.run(f"CREATE ROLE {roles.ERROR_RECORDER} LOGIN PASSWORD '{PASSWORD}'")
        a.run(f"CREATE ROLE {roles.READER} NOLOGIN CREATEDB")  # more than a reader may do
        passwords = a.run("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(CAST(:n AS text[])) "
                          "AND rolpassword IS NOT NULL", n=ROLE_NAMES)
        assert len(passwords) == 2 and all(p for _, p in passwords)
        assert migrate(db) == ALL_VERSIONS
        assert a.run("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(CAST(:n AS text[])) "
                     "AND rolpassword IS NOT NULL", n=ROLE_NAMES) == passwords  # none set, none cleared
        state = catalog_state(a)
        assert migrate(db) == []
        assert catalog_state(a) == state
    assert db.run("SELECT rolname, rolcanlogin, rolcreatedb FROM pg_roles WHERE rolname = ANY(CAST(:n AS text[])) "
                  "ORDER BY 1", n=ROLE_NAMES) == [[roles.ERROR_RECORDER, True, False], [roles.LOADER, True, False],
                                                  [roles.OWNER, False, False], [roles.READER, False, False]]
    assert not_owned_by_owner(db) == []
    conn = pg.connect(user=roles.LOADER, password=PASSWORD)  # its own password still lets it in
    try:
        assert conn.run("SELECT count(*) FROM pagerduty.pipeline_runs") == [[0]]
    finally:
        conn.close()


def test_a_role_someone_made_superuser_stops_the_migration(pg, db, no_roles):
    with admin(pg) as a:
        a.run(f"CREATE ROLE {roles.LOADER} LOGIN SUPERUSER")
        try:
            with pytest.raises(DatabaseError) as exc:
                migrate(db)
            assert exc.value.args[0]["C"] == INSUFFICIENT_PRIVILEGE and roles.LOADER in exc.value.args[0]["M"]
            assert db.run("SELECT to_regnamespace('pagerduty')") == [[None]]  # nothing created
        finally:
            a.run(f"ALTER ROLE {roles.LOADER} NOSUPERUSER")


def test_without_rds_iam_the_login_roles_are_made_members_once_it_exists(pg, db, no_roles):
    """A plain PostgreSQL has no rds_iam: the roles come without it, and get it on a later run once it exists."""
    with admin(pg) as a:
        a.run("DROP ROLE rds_iam")
        try:
            assert migrate(db) == ALL_VERSIONS
            assert a.run("SELECT count(*) FROM pg_roles WHERE rolname = ANY(CAST(:n AS text[]))", n=ROLE_NAMES) == [[4]]
        finally:  # as the RDS master has it (tests/support/postgres.py)
            a.run("CREATE ROLE rds_iam NOLOGIN")
            a.run(f"GRANT rds_iam TO {pg.user} WITH ADMIN OPTION")
    assert migrate(db) == []
    assert {r[0] for r in db.run("SELECT rolname FROM pg_roles WHERE pg_has_role(rolname, 'rds_iam', 'MEMBER') "
                                 "AND rolname LIKE 'pagerduty%'")} == {roles.LOADER, roles.ERROR_RECORDER}


def test_a_schema_the_master_created_before_the_roles_is_taken_over(pg, db):
    roles.ensure_roles(db)  # cluster-wide: this worker may not have made them yet (the master's schema predates them)
    old_migrate(db)
    run_id = add_run(db, "before-roles")
    db.run("INSERT INTO pagerduty.teams (id, name) VALUES ('T1', 'Ops')")
    # what else a master may have put there: a free sequence, a function, types, a materialized view
    db.run("CREATE SEQUENCE pagerduty.spare_seq")
    db.run("CREATE FUNCTION pagerduty.one() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    db.run("CREATE TYPE pagerduty.mood AS ENUM ('calm', 'paged')")
    db.run("CREATE DOMAIN pagerduty.positive AS int CHECK (VALUE > 0)")
    db.run("CREATE TYPE pagerduty.pair AS (a int, b int)")
    db.run("CREATE MATERIALIZED VIEW pagerduty.team_names AS SELECT name FROM pagerduty.teams")
    assert len(not_owned_by_owner(db)) > 40  # the master's, all of it
    assert migrate(db) == ALL_VERSIONS[3:]  # from 4 on
    assert not_owned_by_owner(db) == []
    assert db.run("SELECT run_id, execution_id FROM pagerduty.pipeline_runs") == [[run_id, "before-roles"]]
    with login_as(pg, roles.LOADER) as loader:  # the old rows and the old sequence, now the loader's to use
        assert loader.run("SELECT name FROM pagerduty.teams") == [["Ops"]]
        assert add_run(loader, "after-roles", "failed") > run_id
        denied(loader, "ALTER TABLE pagerduty.teams ADD COLUMN x int")
    with admin(pg) as a:
        state = catalog_state(a)
        assert migrate(db) == []  # once
        assert catalog_state(a) == state


# -- the loader ----------------------------------------------------------------------------------------------------

def test_the_loader_reads_and_writes_the_data_but_cannot_change_the_schema_or_anyones_rights(pg, db):
    migrate(db)
    with login_as(pg, roles.LOADER) as loader:
        loader.run("INSERT INTO pagerduty.teams (id, name) VALUES ('T1', 'Ops'), ('T2', 'Dev')")
        loader.run("UPDATE pagerduty.teams SET name = 'SRE' WHERE id = 'T1'")
        loader.run("DELETE FROM pagerduty.teams WHERE id = 'T2'")
        assert loader.run("SELECT id, name FROM pagerduty.teams") == [["T1", "SRE"]]
        run_id = add_run(loader, "e-loader")  # the bigserial sequence
        loader.run("INSERT INTO pagerduty.watermarks (scope, watermark, run_id) VALUES ('all', now(), :r)", r=run_id)
        loader.run("INSERT INTO pagerduty.coverage (scope, since, until, run_id) "
                   "VALUES ('all', now() - interval '1 day', now(), :r)", r=run_id)
        assert loader.run("SELECT max(version) FROM pagerduty.schema_migrations") == [[LATEST]]
        for table in relations(db, kinds=("r",)):
            loader.run(f"SELECT count(*) FROM pagerduty.{table}")
        # no DDL
        assert "schema pagerduty" in denied(loader, "CREATE TABLE pagerduty.mine (id int)")
        denied(loader, "CREATE TABLE public.mine (id int)")
        denied(loader, "CREATE VIEW pagerduty.mine AS SELECT 1 AS x")
        denied(loader, "CREATE FUNCTION pagerduty.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        assert "must be owner" in denied(loader, "ALTER TABLE pagerduty.incidents ADD COLUMN x int")
        denied(loader, "ALTER TABLE pagerduty.pipeline_runs DROP CONSTRAINT pipeline_runs_status_check")
        denied(loader, "DROP TABLE pagerduty.teams")
        denied(loader, "DROP VIEW pagerduty.incident_overview")
        denied(loader, "CREATE INDEX teams_name_idx ON pagerduty.teams (name)")
        denied(loader, "TRUNCATE pagerduty.teams")
        denied(loader, "DROP SCHEMA pagerduty CASCADE")
        # the migrations' bookkeeping is read-only
        denied(loader, "INSERT INTO pagerduty.schema_migrations (version, name) VALUES (99, 'x')")
        denied(loader, "UPDATE pagerduty.schema_migrations SET name = 'x'")
        denied(loader, "DELETE FROM pagerduty.schema_migrations")
        # no roles, no membership, no becoming the owner
        denied(loader, "CREATE ROLE intruder LOGIN")
        denied(loader, f"GRANT {roles.OWNER} TO {roles.LOADER}")
        denied(loader, f"GRANT {roles.LOADER} TO {roles.READER}")
        denied(loader, f"GRANT rds_iam TO {roles.READER}")
        denied(loader, f"SET ROLE {roles.OWNER}")
        denied(loader, f"ALTER ROLE {roles.READER} LOGIN")
        # no grant option: PostgreSQL answers with a warning and grants nothing
        loader.notices.clear()
        loader.run(f"GRANT SELECT ON pagerduty.teams TO {roles.ERROR_RECORDER}")
        loader.run(f"GRANT INSERT ON pagerduty.schema_migrations TO {roles.READER}")
        assert [n[b"C"] for n in loader.notices] == [b"01007", b"01007"]  # warning_privilege_not_granted
    assert db.run(f"""SELECT has_table_privilege('{roles.ERROR_RECORDER}', 'pagerduty.teams', 'SELECT'),
                             has_table_privilege('{roles.READER}', 'pagerduty.schema_migrations', 'INSERT')""") == [
        [False, False]]


# -- the error recorder --------------------------------------------------------------------------------------------

def test_the_error_recorder_can_only_record_a_runs_failure(pg, db):
    migrate(db)
    running = add_run(db, "e-running")
    by_execution = add_run(db, "e-by-execution", "failed")
    db.run("UPDATE pagerduty.pipeline_runs SET status = 'succeeded' WHERE run_id = :r", r=by_execution)
    timed_out = add_run(db, "e-timed-out", "timed_out")
    with login_as(pg, roles.ERROR_RECORDER) as recorder:
        assert recorder.run(f"SELECT * FROM pagerduty.record_run_failure(NULL, {running}, 'Step2', 'boom', 'it broke')"
                            ) == [[running, True]]
        assert runs.record_failure(recorder, "e-by-execution", None, "Step3", "late", "after all") == (by_execution,
                                                                                                        True)
        assert runs.record_failure(recorder, None, timed_out, "Step2", "boom", "x") == (timed_out, False)
        assert runs.record_failure(recorder, "e-unknown", None, "Step2", "boom", "x") == (None, False)
        # no table privilege at all
        for table in relations(db):
            denied(recorder, f"SELECT * FROM pagerduty.{table}")
        denied(recorder, "UPDATE pagerduty.pipeline_runs SET status = 'succeeded'")
        denied(recorder, "UPDATE pagerduty.pipeline_runs SET status = 'succeeded' WHERE run_id = :r", r=running)
        denied(recorder, "INSERT INTO pagerduty.pipeline_runs (execution_id) VALUES ('forged')")
        denied(recorder, "DELETE FROM pagerduty.pipeline_runs")
        denied(recorder, "SELECT nextval('pagerduty.pipeline_runs_run_id_seq')")
        denied(recorder, "CREATE TABLE pagerduty.mine (id int)")
        denied(recorder, f"SET ROLE {roles.OWNER}")
    stored = db.run("SELECT run_id, status, step, error, message FROM pagerduty.pipeline_runs")
    assert {r[0]: r[1:] for r in stored} == {
        running: ["failed", "Step2", "boom", "it broke"],
        by_execution: ["failed", "Step3", "late", "after all"],
        timed_out: ["timed_out", "lambda_1", None, None]}  # a reconciled run keeps its status


# -- the reader ----------------------------------------------------------------------------------------------------

def test_an_analyst_with_the_reader_role_reads_every_table_and_view_and_writes_nothing(pg, db):
    migrate(db)
    add_run(db, "e-read")
    analyst = "pagerduty_test_analyst"
    db.run(f"CREATE ROLE {analyst} LOGIN PASSWORD '{PASSWORD}'")  # as roles.py tells (with a password here)
    db.run(f"GRANT rds_iam, {roles.READER} TO {analyst}")
    try:
        conn = pg.connect(user=analyst, password=PASSWORD)
        try:
            tables = relations(db)
            assert {"incident_overview", "schema_migrations", "pipeline_runs", "incidents"} <= set(tables)
            for table in tables:
                conn.run(f"SELECT count(*) FROM pagerduty.{table}")
            assert conn.run("SELECT execution_id FROM pagerduty.pipeline_runs") == [["e-read"]]
            denied(conn, "INSERT INTO pagerduty.teams (id) VALUES ('T1')")
            denied(conn, "UPDATE pagerduty.pipeline_runs SET status = 'failed'")
            denied(conn, "DELETE FROM pagerduty.pipeline_runs")
            denied(conn, "SELECT nextval('pagerduty.pipeline_runs_run_id_seq')")
            denied(conn, "SELECT * FROM pagerduty.record_run_failure('e-read', NULL, 'x', 'x', 'x')")
            denied(conn, "SELECT * FROM pagerduty.record_run_ended('e-read', 'failed', 'x', 'x')")
            denied(conn, "CREATE TABLE pagerduty.mine (id int)")
            denied(conn, f"SET ROLE {roles.LOADER}")
        finally:
            conn.close()
    finally:
        db.run(f"DROP ROLE {analyst}")


# -- what later migrations create ----------------------------------------------------------------------------------

def test_a_table_of_a_later_migration_is_readable_by_the_reader_and_writable_by_the_loader(pg, db, monkeypatch):
    migrate(db)
    later = (LATEST + 1, "a later migration", [
        "CREATE TABLE pagerduty.later_things (id bigserial PRIMARY KEY, note text)",
        "CREATE VIEW pagerduty.later_view AS SELECT id, note FROM pagerduty.later_things"])
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, later])
    assert migrate(db) == [LATEST + 1]
    assert not_owned_by_owner(db) == []
    with login_as(pg, roles.LOADER) as loader:
        loader.run("INSERT INTO pagerduty.later_things (note) VALUES ('a'), ('b')")  # and its sequence
        loader.run("UPDATE pagerduty.later_things SET note = 'c' WHERE note = 'b'")
        loader.run("DELETE FROM pagerduty.later_things WHERE note = 'a'")
        denied(loader, "ALTER TABLE pagerduty.later_things ADD COLUMN x int")
        denied(loader, "DROP TABLE pagerduty.later_things CASCADE")
    with admin(pg) as a:
        a.run(f"SET ROLE {roles.READER}")
        assert a.run("SELECT note FROM pagerduty.later_things") == [["c"]]
        assert a.run("SELECT note FROM pagerduty.later_view") == [["c"]]
        denied(a, "INSERT INTO pagerduty.later_things (note) VALUES ('x')")
        a.run(f"SET ROLE {roles.ERROR_RECORDER}")
        denied(a, "SELECT note FROM pagerduty.later_things")


# -- the steps -----------------------------------------------------------------------------------------------------

def test_step1_works_as_the_loader_after_migrating(env, db, server, monkeypatch):
    seen = []
    claim_run = runs.claim_run

    def spy(conn, *args, **kwargs):
        seen.append(conn.run("SELECT current_user, session_user")[0])
        return claim_run(conn, *args, **kwargs)

    monkeypatch.setattr(runs, "claim_run", spy)
    first = steps.start_run(envelope(WEEK, name="as-loader"), env=env)
    assert first["success"], first
    assert seen == [[roles.LOADER, "pipeline"]]
    db.run("UPDATE pagerduty.pipeline_runs SET status = 'failed'")  # release the claim
    # a grant the loader lacks fails step 1 (the master it logged in as would not have been refused)
    db.run(f"REVOKE SELECT ON pagerduty.watermarks FROM {roles.LOADER}")
    out = steps.start_run(envelope({}, name="no-grant"), env=env)  # no 'since': the watermark is read
    assert out["success"] is False and out["error"] == "db_error", out
    assert "permission denied" in out["message"] and INSUFFICIENT_PRIVILEGE in out["message"]
    # ... and the failure was recorded, as the loader, through record_run_failure
    assert db.run("SELECT status, error FROM pagerduty.pipeline_runs WHERE execution_name = 'no-grant'") == [
        ["failed", "db_error"]]


def db_secret(user: str, password: str, pg) -> str:
    import boto3

    body = {**pg.secret(), "username": user, "password": password}
    return boto3.client("secretsmanager").create_secret(Name=f"pipeline/db-{user}-{uuid.uuid4().hex[:8]}",
                                                        SecretString=json.dumps(body))["ARN"]


def test_the_workflow_runs_with_steps_2_and_3_as_the_loader_and_the_error_handler_as_the_recorder(
        pg, secrets_arns, db, server):
    master_env = make_env(pg, secrets_arns, server)  # step 1 migrates: the master
    migrate(db)  # the roles exist before their passwords can be given
    with passwords(pg, roles.LOADER, roles.ERROR_RECORDER):
        loader_env = {**master_env, "DB_SECRET_ARN": db_secret(roles.LOADER, PASSWORD, pg)}
        recorder_env = {**master_env, "DB_SECRET_ARN": db_secret(roles.ERROR_RECORDER, PASSWORD, pg)}

        r1 = steps.start_run(envelope(WEEK, name="w1", state="Step1"), env=master_env)
        assert r1["success"], r1
        state = r1
        while True:
            state = steps.load_incidents(envelope(state, name="w1", state="Step2"), env=loader_env)
            assert state["success"], state
            if state["complete"]:
                break
        r3 = steps.validate_run(envelope(state, name="w1", state="Step3"), env=loader_env)
        assert r3["success"], r3
        assert db.run("SELECT status FROM pagerduty.pipeline_runs WHERE run_id = :r", r=r1["run_id"]) == [
            ["succeeded"]]

        # a failing step 2 (the loader) records its failure; the error handler (the recorder) records the cause
        r1 = steps.start_run(envelope(WEEK, name="w2", state="Step1"), env=master_env)
        assert r1["success"], r1
        server.inject(401, count=100, path="/log_entries")
        failed = steps.load_incidents(envelope(r1, name="w2", state="Step2"), env=loader_env)
        assert failed["success"] is False and failed["error"] == "pagerduty_unauthorized", failed
        handled = steps.handle_error(envelope({"failed_step": "Step2", "state": failed}, name="w2"),
                                     env=recorder_env)
        assert handled["recorded"] is True and handled["run_id"] == failed["run_id"]
        # found by the execution alone (a step that died before returning a run id)
        died = {"error": {"Error": "Sandbox.Timedout", "Cause": "timed out"}}
        handled = steps.handle_error(envelope({"failed_step": "Step3", "state": died}, name="w2"), env=recorder_env)
        assert handled["recorded"] is True and handled["run_id"] == failed["run_id"]
    assert db.run("SELECT status, step, error FROM pagerduty.pipeline_runs WHERE run_id = :r", r=failed["run_id"]) == [
        ["failed", "Step3", "Sandbox.Timedout"]]
