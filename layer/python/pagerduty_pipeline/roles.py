"""Database roles by job: who may do what in schema ``pagerduty``.

The Lambdas do not all work as the RDS master user. Four cluster-wide roles, created and kept in shape by
``migrations.migrate`` on every run (idempotently: roles are not versioned with the schema), split the work:

``pagerduty_owner`` (:data:`OWNER`)
    NOLOGIN. Owns schema ``pagerduty`` and every object in it; the migrations (DDL) run as this role
    (``SET ROLE`` on the master's connection, so the master is made a member of it). Nobody logs in as it.

``pagerduty_loader`` (:data:`LOADER`)
    LOGIN (with IAM tokens on RDS: member of ``rds_iam`` where that role exists). Steps 2 and 3 (lambda_2,
    lambda_3) log in as it; step 1 (lambda_1) logs in as the master because it migrates, then switches to it
    (:func:`use_loader`) for all of its run work, so that a grant the loader lacks fails in every test, not only
    in steps 2 and 3. It may read and write the data and bookkeeping tables (SELECT, INSERT, UPDATE, DELETE on
    every table, USAGE/SELECT/UPDATE on the sequences, today's and, through default privileges, future ones),
    only read ``schema_migrations``, and record a run's failure through ``pagerduty.record_run_failure``. No
    DDL (no CREATE on the schema, owns nothing), no TRUNCATE, no CREATEROLE, no grant options: a leaked
    loader credential can change data, not the schema or anyone's rights.

``pagerduty_error_recorder`` (:data:`ERROR_RECORDER`)
    LOGIN (IAM on RDS, like the loader). The error-handler Lambda (lambda_error_handler) logs in as it. It may
    only record that a run failed or ended: USAGE on the schema and EXECUTE on ``pagerduty.record_run_failure``
    (the Catch path) and ``pagerduty.record_run_ended`` (EventBridge's execution status change; migration 5), both
    SECURITY DEFINER and owned by the owner, no privilege on any table. The handler runs after any step failed, with
    the failure's text in its input: it has no business reading or writing anything else.

``pagerduty_reader`` (:data:`READER`)
    NOLOGIN group role for analysts and dashboards: USAGE on the schemas ``pagerduty`` and ``analytics`` (the views
    of docs/analytics.md, migration 6) and SELECT on every table and view in them (future ones too, through default
    privileges), nothing else. No Lambda uses it. An analyst gets a login of
    their own that is a member of it; on RDS, with IAM authentication::

        CREATE ROLE alice LOGIN;
        GRANT rds_iam, pagerduty_reader TO alice;

    plus an IAM policy allowing ``rds-db:connect`` on
    ``arn:aws:rds-db:<region>:<account>:dbuser:<DbiResourceId>/alice`` for whoever is alice in AWS. (On a
    PostgreSQL without IAM: ``CREATE ROLE alice LOGIN PASSWORD '...'; GRANT pagerduty_reader TO alice;``.)

The master user stays for administration and for step 1's migrations. Passwords are never set or cleared
here: on RDS the login roles use IAM tokens, elsewhere whoever runs the database gives them passwords.
"""

from __future__ import annotations

from pg8000.native import identifier

OWNER = "pagerduty_owner"
LOADER = "pagerduty_loader"
ERROR_RECORDER = "pagerduty_error_recorder"
READER = "pagerduty_reader"
RDS_IAM = "rds_iam"  # exists on RDS only: its members log in with IAM authentication tokens
SCHEMA = "pagerduty"

LOGIN_ROLES = (LOADER, ERROR_RECORDER)  # the roles the Lambdas log in as (besides the master, for step 1)

# role -> (can log in, the connecting master user is made a member so that it can SET ROLE to it)
ROLES: dict[str, tuple[bool, bool]] = {
    OWNER: (False, True),
    LOADER: (True, True),
    ERROR_RECORDER: (True, False),
    READER: (False, False),
}


def _values() -> str:
    return ", ".join(f"('{name}', {str(login).lower()}, {str(member).lower()})"
                     for name, (login, member) in ROLES.items())


# Creates the missing roles and puts the existing ones in shape, touching only what differs (on PostgreSQL 16+ a
# CREATEROLE user may alter or grant only roles it has ADMIN OPTION on: the roles it created itself; roles someone
# else pre-created in the right shape need nothing). Passwords are left alone. The creator of a role only gets
# ADMIN OPTION on it on 16+, not membership: the master is granted owner and loader explicitly.
ENSURE_ROLES = f"""
DO $roles$
DECLARE
  r record;
  a record;
  opts text;
  have_iam boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{RDS_IAM}');
BEGIN
  FOR r IN SELECT * FROM (VALUES {_values()}) AS v (name, login, master_member) LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I %s', r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created meanwhile by a migration in another database of the cluster
      END;
    END IF;
    SELECT rolcanlogin, rolsuper, rolbypassrls, rolreplication, rolcreaterole, rolcreatedb INTO a
      FROM pg_catalog.pg_roles WHERE rolname = r.name;
    IF a.rolsuper OR a.rolbypassrls OR a.rolreplication THEN
      RAISE EXCEPTION 'role % is SUPERUSER, BYPASSRLS or REPLICATION: an administrator must remove that', r.name
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    opts := '';
    IF a.rolcanlogin <> r.login THEN
      opts := CASE WHEN r.login THEN ' LOGIN' ELSE ' NOLOGIN' END;
    END IF;
    IF a.rolcreaterole THEN
      opts := opts || ' NOCREATEROLE';
    END IF;
    IF a.rolcreatedb THEN
      opts := opts || ' NOCREATEDB';
    END IF;
    IF opts <> '' THEN
      EXECUTE format('ALTER ROLE %I%s', r.name, opts);
    END IF;
    IF r.master_member AND NOT pg_catalog.pg_has_role(current_user, r.name, 'USAGE') THEN
      EXECUTE format('GRANT %I TO CURRENT_USER', r.name);
    END IF;
    IF r.login AND have_iam AND NOT pg_catalog.pg_has_role(r.name, '{RDS_IAM}', 'MEMBER') THEN
      EXECUTE format('GRANT {RDS_IAM} TO %I', r.name);
    END IF;
  END LOOP;
END
$roles$"""

# Deployments from before the roles: the master user created the schema and everything in it. Hand the schema,
# then each object the master owns in it, to the owner, in one transaction (this DO block). Nothing to do once
# done. Tables take their indexes, TOAST tables, row types and serial/identity sequences along; the schema goes
# first because a new owner of a table must have CREATE on its schema.
TAKE_OVER_SCHEMA = f"""
DO $takeover$
DECLARE
  nsp oid := (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = '{SCHEMA}');
  me oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user);
  obj record;
BEGIN
  IF nsp IS NULL THEN
    RETURN;
  END IF;
  IF (SELECT nspowner FROM pg_catalog.pg_namespace WHERE oid = nsp) <> '{OWNER}'::regrole THEN
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', '{SCHEMA}', '{OWNER}');
  END IF;
  FOR obj IN
    SELECT c.oid::regclass AS name,
           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                          WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = nsp AND c.relowner = me AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d  -- sequences of a serial or identity column
                        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I', obj.kind, obj.name, '{OWNER}');
  END LOOP;
  FOR obj IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = nsp AND p.proowner = me LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.name, '{OWNER}');
  END LOOP;
  FOR obj IN SELECT t.oid::regtype AS name, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END AS kind
               FROM pg_catalog.pg_type t
              WHERE t.typnamespace = nsp AND t.typowner = me AND t.typtype IN ('c', 'd', 'e', 'r')
                AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c')
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I', obj.kind, obj.name, '{OWNER}');
  END LOOP;
END
$takeover$"""


def ensure_roles(conn) -> None:
    """Create the four roles if missing and keep their shape (run as the master user, not versioned)."""
    conn.run(ENSURE_ROLES)


def take_over_schema(conn) -> None:
    """Give the schema and what the connected (master) user owns in it to the owner role; idempotent."""
    conn.run(TAKE_OVER_SCHEMA)


def current_role_setting(conn) -> str:
    """The session's ``SET ROLE`` (``none`` when it has not switched)."""
    return conn.run("SELECT pg_catalog.current_setting('role')")[0][0]


def set_role(conn, role: str | None) -> None:
    """``SET ROLE role`` on the connection, or ``RESET ROLE`` (back to the login user) for None or ``none``."""
    if role is None or role == "none":
        conn.run("RESET ROLE")
    else:
        conn.run("SET ROLE " + identifier(role))


def use_loader(conn) -> None:
    """Go on as the loader on a connection of the master user (step 1 after its migrations)."""
    set_role(conn, LOADER)
