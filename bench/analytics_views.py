"""Benchmark: the views of schema `analytics` (docs/analytics.md) over N stored incidents.

    .venv/bin/python bench/analytics_views.py                     # N = 200,000 (~6 months)
    .venv/bin/python bench/analytics_views.py --incidents 20000 --repeats 1

A throwaway PostgreSQL (fsync off, the server's default work_mem, shared_buffers and jit) is migrated up to the
migration before the analytics one, and schema `pagerduty` is filled with set-based SQL alone (INSERT … SELECT
over generate_series; not the pipeline, not row by row): 10 teams, 60 users (time zones of four continents, one
NULL, one that is no zone, 3 deleted users kept as stubs), 30 services (3 deleted ones as stubs, 2 without a
team), 5 priorities, and N incidents over --days days up to now, each with its log entries in PagerDuty's order
(trigger, assign, notify ×1-3, escalate + notify when nobody acknowledged within 15 min, a few reassignments,
acknowledge ~85 %, unacknowledge by timeout and acknowledge again, resolve ~90 % by a user, an integration, the
service or a timeout, ~2 % merged, ~2 % reopened), their teams (some two, some none), current assignments and,
for some, their alert rows, with the raw documents as the API gives them. Every random choice is made once per
incident in a temporary plan table (seeded: the same N and --seed give the same data, up to the end time, which
is now). The secondary indexes and foreign keys of the filled tables are dropped while they are filled and added
back afterwards, as pg_restore does (adding a foreign key validates every row). The data is checked (the step-3
checks that need no API total, and the timelines), vacuumed and analyzed; then the analytics migrations run over
it, as they would on an existing deployment (timed: their backfill is part of it).

Each query is then timed as an analyst (a login in `pagerduty_reader`) or the report runs it: one warm-up run,
then the best of --repeats, rows fetched into Python, with the server's CPU time (the whole server's, parallel
workers included: on a busy machine the wall time also counts the waits for a core); EXPLAIN (ANALYZE, BUFFERS)
gives the server's time, JIT time, temporary files, the top plan node and the scans (index or sequential) of
each. It is run with the indexes the analytics migrations create (every CREATE INDEX of migration 6 and later),
with those dropped (then re-analyzed, and recreated afterwards) and, with --also/--set, with a candidate index
or setting; the EXPLAIN (ANALYZE, BUFFERS) of each query slower than 3 s is printed. Prints figures only;
nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import secrets
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from unittest import mock

import harness  # noqa: F401  (sets the import path and a fake AWS environment)

import pg8000.native  # noqa: E402

from pagerduty_pipeline.checks import CHECKS, Scope  # noqa: E402
from pagerduty_pipeline import migrations  # noqa: E402
from pagerduty_pipeline.migrations import MIGRATIONS, migrate  # noqa: E402
from tests.support.postgres import throwaway_postgres  # noqa: E402

UTC = timezone.utc
ANALYTICS_MIGRATION = 6  # the first migration of schema analytics
SLOW_MS = 3000  # the requirement: every view answers within a few seconds
ANALYST = "bench_analyst"

# -- reference data -------------------------------------------------------------------------------------------
TEAMS = ["Platform", "Payments", "Mobile", "Search", "Data", "Identity", "Checkout", "Infrastructure", "Growth",
         "Support"]
FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Dennis", "Frances", "John",
         "Radia", "Leslie", "Tim", "Sophie", "Linus", "Guido", "Bjarne", "Anita", "Niklaus"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Ritchie", "Allen",
        "McCarthy", "Perlman", "Lamport", "Berners-Lee", "Wilson", "Torvalds", "van Rossum", "Stroustrup", "Borg",
        "Wirth"]
# user 1 has no time zone, user 2 one that is no zone; the others cycle through these
ZONES = ["America/New_York", "Europe/London", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata",
         "America/Chicago", "Asia/Tokyo", "Europe/Paris", "Australia/Sydney", "UTC", "America/Sao_Paulo",
         "Europe/Dublin"]
SERVICES = ["checkout-api", "billing-worker", "ios-app", "edge-proxy", "search-api", "auth-service", "cart-api",
            "k8s-cluster-eu", "payments-gateway", "support-portal", "orders-db", "fraud-scorer", "android-app",
            "cdn", "indexer", "sso", "ledger", "notifications", "kafka", "helpdesk-sync", "inventory-api",
            "risk-engine", "web-frontend", "dns", "recommendations", "legacy-ftp", "status-page", "old-billing",
            "beta-search", "poc-mobile"]
USERS, FULL_USERS = 60, 57  # users 58-60: deleted, stubs
N_SERVICES, FULL_SERVICES = 30, 27  # services 28-30: deleted, stubs; 26 and 27 have no team
PRIORITIES = [("P1", "a8171c"), ("P2", "eb6016"), ("P3", "f9b406"), ("P4", "3d7fd8"), ("P5", "7f8c8d")]
API, WEB = "https://api.pagerduty.com", "https://acme.pagerduty.com"


def _arr(values) -> str:
    return "ARRAY[" + ", ".join(pg8000.native.literal(v) for v in values) + "]::text[]"


def _ts(expr: str) -> str:
    """An ISO 8601 UTC string as the API writes it (the session's time zone is UTC)."""
    return f"to_char({expr}, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"


DIMENSIONS_SQL = [
    f"""INSERT INTO pagerduty.teams (id, name, description, is_stub, raw)
        SELECT id, name, name || ' team', false,
               jsonb_build_object('id', id, 'type', 'team', 'summary', name, 'name', name,
                                  'description', name || ' team', 'self', '{API}/teams/' || id,
                                  'html_url', '{WEB}/teams/' || id, 'parent', NULL)
          FROM (SELECT 'PTM' || lpad(t::text, 4, '0') AS id, ({_arr(TEAMS)})[t] AS name
                  FROM generate_series(1, {len(TEAMS)}) t) x""",
    f"""INSERT INTO pagerduty.users (id, name, email, role, time_zone, is_stub, raw)
        SELECT id, name, CASE WHEN stub THEN NULL ELSE email END, CASE WHEN stub THEN NULL ELSE role END,
               CASE WHEN stub THEN NULL ELSE zone END, stub,
               CASE WHEN stub THEN jsonb_build_object('id', id, 'type', 'user_reference', 'summary', name)
                    ELSE jsonb_build_object('id', id, 'type', 'user', 'name', name, 'summary', name, 'email', email,
                                            'role', role, 'time_zone', zone, 'job_title', 'Engineer',
                                            'avatar_url', NULL, 'description', NULL,
                                            'teams', jsonb_build_array(jsonb_build_object(
                                                'id', 'PTM' || lpad(((u - 1) % 10 + 1)::text, 4, '0'),
                                                'type', 'team_reference',
                                                'summary', ({_arr(TEAMS)})[(u - 1) % 10 + 1])),
                                            'self', '{API}/users/' || id, 'html_url', '{WEB}/users/' || id) END
          FROM (SELECT u, 'PUS' || lpad(u::text, 4, '0') AS id, name,
                       lower(replace(replace(name, ' ', '.'), '-', '')) || '@acme.example' AS email,
                       CASE WHEN u % 15 = 1 THEN 'admin' ELSE 'user' END AS role,
                       CASE u WHEN 1 THEN NULL WHEN 2 THEN 'Mars/Olympus_Mons'
                              ELSE ({_arr(ZONES)})[(u - 3) % {len(ZONES)} + 1] END AS zone,
                       u > {FULL_USERS} AS stub
                  FROM (SELECT u, ({_arr(FIRST)})[(u - 1) % 20 + 1] || ' '
                                  || ({_arr(LAST)})[(((u - 1) / 20) * 7 + (u - 1) % 20) % 20 + 1] AS name
                          FROM generate_series(1, {USERS}) u) n) x""",
    f"""INSERT INTO pagerduty.escalation_policies (id, name, is_stub, raw)
        SELECT id, name, false, jsonb_build_object('id', id, 'type', 'escalation_policy', 'name', name,
                                                   'summary', name, 'num_loops', 1,
                                                   'self', '{API}/escalation_policies/' || id)
          FROM (SELECT 'PEP' || lpad(t::text, 4, '0') AS id, ({_arr(TEAMS)})[t] || ' on-call' AS name
                  FROM generate_series(1, {len(TEAMS)}) t) x""",
    f"""INSERT INTO pagerduty.priorities (id, name, description, color, priority_order, is_stub, raw)
        SELECT id, name, 'Priority ' || name, color, ord, false,
               jsonb_build_object('id', id, 'type', 'priority', 'name', name, 'summary', name, 'color', color,
                                  'order', ord, 'description', 'Priority ' || name, 'self', '{API}/priorities/' || id)
          FROM (SELECT 'PPR' || lpad(p::text, 4, '0') AS id, ({_arr([n for n, _ in PRIORITIES])})[p] AS name,
                       ({_arr([c for _, c in PRIORITIES])})[p] AS color, (6 - p) * 64 AS ord
                  FROM generate_series(1, {len(PRIORITIES)}) p) x""",
    f"""INSERT INTO pagerduty.services (id, name, description, status, escalation_policy_id, created_at, is_stub,
                                       raw)
        SELECT id, name, CASE WHEN stub THEN NULL ELSE 'The ' || name END, CASE WHEN stub THEN NULL ELSE 'active' END,
               CASE WHEN stub THEN NULL ELSE ep END, CASE WHEN stub THEN NULL ELSE
                    (SELECT start_at FROM bounds) - interval '400 days' END,
               stub,
               CASE WHEN stub THEN jsonb_build_object('id', id, 'type', 'service_reference', 'summary', name)
                    ELSE jsonb_build_object('id', id, 'type', 'service', 'name', name, 'summary', name,
                                            'description', 'The ' || name, 'status', 'active',
                                            'escalation_policy', jsonb_build_object('id', ep,
                                                'type', 'escalation_policy_reference'),
                                            'teams', CASE WHEN s IN (26, 27) THEN '[]'::jsonb
                                                          ELSE jsonb_build_array(jsonb_build_object(
                                                            'id', 'PTM' || lpad(((s - 1) % 10 + 1)::text, 4, '0'),
                                                            'type', 'team_reference')) END,
                                            'auto_resolve_timeout', 14400, 'acknowledgement_timeout', 1800,
                                            'self', '{API}/services/' || id, 'html_url', '{WEB}/services/' || id) END
          FROM (SELECT s, 'PSV' || lpad(s::text, 4, '0') AS id, ({_arr(SERVICES)})[s] AS name,
                       'PEP' || lpad(((s - 1) % 10 + 1)::text, 4, '0') AS ep, s > {FULL_SERVICES} AS stub
                  FROM generate_series(1, {N_SERVICES}) s) x""",
]

# One row per incident: every random choice, made once, and the times of its timeline. Times after the end are
# dropped afterwards (the incident is still open, or not yet acknowledged, at the end).
PLAN_RANDOM_SQL = """
CREATE TEMP TABLE plan_random AS
SELECT i, random() AS r_t, random() AS r_svc, random() AS r_urg, random() AS r_prio, random() AS r_manual,
       random() AS r_user, random() AS r_flap, random() AS r_ack, random() AS r_ack_kind, random() AS r_ack_delay,
       random() AS r_notify, random() AS r_reassign, random() AS r_unack, random() AS r_ack2, random() AS r_merge,
       random() AS r_merge_to, random() AS r_res, random() AS r_res_kind, random() AS r_res_delay,
       random() AS r_reopen, random() AS r_reopen2, random() AS r_reopen_delay, random() AS r_alerts,
       random() AS r_alert_rows, random() AS r_key, random() AS r_key2, random() AS r_team2, random() AS r_ack_by,
       random() AS r_channel
  FROM generate_series(1, (SELECT n FROM bounds)) i"""

TIMELINE = ("esc_at", "reassign_at", "ack_at", "unack_at", "ack2_at", "res_at", "reopen_at", "ack3_at", "res2_at")
_CUT = ",\n       ".join(f"CASE WHEN {t} < end_at THEN {t} END AS {t}" for t in TIMELINE)

PLAN_SQL = f"""
CREATE TEMP TABLE plan AS
WITH a AS (
  SELECT r.*, b.start_at, b.end_at, r_manual < 0.04 AS manual,
         date_trunc('second', b.start_at + (b.end_at - b.start_at) * (((i - 1) + r_t) / b.n)) AS t0
    FROM plan_random r CROSS JOIN bounds b),
b AS (  -- service (skewed: the first ones page most; deleted services only in the first 100 days), team, people
  SELECT a.*, svc0 - CASE WHEN svc0 > {FULL_SERVICES} AND t0 > start_at + interval '100 days' THEN {FULL_SERVICES}
                         ELSE 0 END AS svc
    FROM (SELECT a.*, 1 + floor({N_SERVICES} * power(r_svc, 1.7))::int AS svc0 FROM a) a),
c AS (
  SELECT b.*, (svc - 1) % 10 + 1 AS tm, floor(r_user * 6)::int AS k,
         NOT manual AND r_flap < 0.08 AS flap
    FROM b),
d AS (  -- deleted users (58-60) only in the first 120 days
  SELECT c.*,
         u0 - CASE WHEN u0 > {FULL_USERS} AND t0 > start_at + interval '120 days' THEN 10 ELSE 0 END AS assignee,
         u1 - CASE WHEN u1 > {FULL_USERS} AND t0 > start_at + interval '120 days' THEN 10 ELSE 0 END AS esc_user,
         u2 - CASE WHEN u2 > {FULL_USERS} AND t0 > start_at + interval '120 days' THEN 10 ELSE 0 END AS re_user,
         NOT flap AND r_ack < 0.925 AS acked,
         CASE WHEN r_ack_kind < 0.62 THEN 20 + -ln(1 - r_ack_delay) * 150
              WHEN r_ack_kind < 0.90 THEN 120 + -ln(1 - r_ack_delay) * 600
              ELSE 600 + -ln(1 - r_ack_delay) * 5400 END AS ack_delay
    FROM (SELECT c.*, tm + 10 * k AS u0, tm + 10 * ((k + 1) % 6) AS u1, tm + 10 * ((k + 2) % 6) AS u2 FROM c) c),
e AS (
  SELECT d.*, CASE WHEN acked THEN t0 + make_interval(secs => round(ack_delay)) END AS ack_at,
         acked AND r_reassign < 0.04 AND ack_delay > 120 AS reassigned,
         acked AND r_unack < 0.03 AS unacked,
         1 + floor(r_notify * 3)::int AS n_notify
    FROM d),
f AS (
  SELECT e.*,
         CASE WHEN reassigned THEN t0 + make_interval(secs => round(ack_delay / 2)) END AS reassign_at,
         CASE WHEN unacked THEN ack_at + interval '30 minutes' END AS unack_at,
         CASE WHEN unacked THEN ack_at + interval '30 minutes' + make_interval(secs => 60 + floor(r_ack2 * 600))
              END AS ack2_at
    FROM e),
g AS (
  SELECT f.*, coalesce(ack2_at, ack_at) AS last_ack,
         NOT flap AND NOT manual AND i > 50 AND r_merge < 0.02 AS merged,
         flap OR (acked AND r_res < 0.93) OR (NOT acked AND r_res < 0.55) AS resolves
    FROM f),
h AS (
  SELECT g.*,
         CASE WHEN NOT resolves THEN NULL
              WHEN merged THEN 'merge'
              WHEN flap THEN 'integration'
              WHEN acked THEN CASE WHEN r_res_kind < 0.75 THEN 'user' WHEN r_res_kind < 0.93 THEN 'integration'
                                   WHEN r_res_kind < 0.97 THEN 'service' ELSE 'timeout' END
              ELSE CASE WHEN r_res_kind < 0.55 THEN 'integration' WHEN r_res_kind < 0.80 THEN 'timeout'
                        ELSE 'service' END END AS res_kind
    FROM g),
j AS (
  SELECT h.*,
         CASE WHEN res_kind IS NULL THEN NULL
              WHEN flap THEN t0 + make_interval(secs => 60 + floor(r_res_delay * 200))
              WHEN res_kind = 'merge'
                   THEN coalesce(last_ack, t0) + make_interval(secs => 60 + floor(r_res_delay * 1200))
              WHEN res_kind = 'timeout' THEN coalesce(last_ack, t0) + interval '4 hours'
              ELSE coalesce(last_ack, t0) + make_interval(secs => round(
                       120 + -ln(1 - r_res_delay) * CASE WHEN r_urg < 0.62 THEN 2700 ELSE 10800 END)) END AS res_at
    FROM h),
k AS (
  SELECT j.*,
         res_at IS NOT NULL AND res_kind <> 'merge' AND r_reopen < 0.02 AS reopened,
         CASE WHEN reassigned THEN re_user
              WHEN ack_delay > 900 AND r_ack_by < 0.5 THEN esc_user ELSE assignee END AS ack_user
    FROM j),
m AS (
  SELECT k.*,
         CASE WHEN reopened THEN res_at + make_interval(secs => 300 + floor(r_reopen_delay * 7200)) END AS reopen_at
    FROM k),
n AS (
  SELECT m.*,
         CASE WHEN reopened AND r_reopen2 < 0.8 THEN reopen_at + make_interval(secs => 120 + floor(r_reopen2 * 600))
              END AS ack3_at,
         CASE WHEN reopened AND r_reopen2 < 0.8 THEN reopen_at + make_interval(secs => 1800 + floor(r_reopen2 * 9000))
              END AS res2_at,
         -- escalation: nobody acknowledged within the policy's 15 minutes and it was still open then
         CASE WHEN (ack_at IS NULL OR ack_at > t0 + interval '900 seconds')
                   AND (res_at IS NULL OR res_at > t0 + interval '900 seconds')
              THEN t0 + interval '900 seconds' END AS esc_at
    FROM m)
SELECT i, 'Q' || upper(lpad(to_hex(i::bigint * 104729 + 1000000007), 12, '0')) AS id, t0, svc, tm,
       CASE WHEN svc IN (26, 27) THEN NULL ELSE tm END AS team1,
       CASE WHEN svc NOT IN (26, 27) AND r_team2 < 0.10 THEN tm % 10 + 1 END AS team2,
       CASE WHEN r_urg < 0.03 THEN NULL WHEN r_urg < 0.62 THEN 'high' ELSE 'low' END AS urgency,
       CASE WHEN r_prio < 0.4 THEN NULL ELSE 1 + floor((r_prio - 0.4) / 0.6 * 5)::int END AS prio,
       manual, flap, assignee, esc_user, re_user, ack_user, n_notify, r_channel,
       coalesce(ack_at, res_at, 'infinity') AS quiet_at,  -- repeated notifications stop there
       CASE WHEN res_kind = 'merge'
            THEN 'Q' || upper(lpad(to_hex((i - 1 - floor(r_merge_to * 30))::bigint * 104729 + 1000000007), 12, '0'))
            END AS merged_into,
       res_kind,
       -- the timeline, each time dropped when it is after the end (the later ones are later still)
       {_CUT},
       CASE WHEN manual THEN 0 ELSE 1 + floor(power(r_alerts, 2) * 5)::int + CASE WHEN flap THEN 3 ELSE 0 END
            END AS alerts,
       NOT manual AND r_alert_rows < 0.01 AS no_alert_counts,
       r_alert_rows < 0.10 AS alert_rows,
       CASE WHEN NOT manual AND r_key < 0.35 THEN ({_arr(SERVICES)})[svc] || '/check-' || floor(r_key2 * 12)::int
            ELSE md5(i::text || '-key') END AS incident_key
  FROM n"""

# status, resolution and the current state of each planned incident
STATE_SQL = """
CREATE TEMP TABLE state AS
SELECT i, status, last_status_change_at, updated_at, assigned_at,
       CASE WHEN status = 'acknowledged' AND ack3_at IS NOT NULL THEN assignee
            WHEN status = 'acknowledged' THEN ack_user
            WHEN reassign_at IS NOT NULL THEN re_user WHEN esc_at IS NOT NULL THEN esc_user
            ELSE assignee END AS current_user_n
  FROM (SELECT p.*,
               CASE WHEN res2_at IS NOT NULL THEN 'resolved' WHEN ack3_at IS NOT NULL THEN 'acknowledged'
                    WHEN reopen_at IS NOT NULL THEN 'triggered' WHEN res_at IS NOT NULL THEN 'resolved'
                    WHEN ack2_at IS NOT NULL THEN 'acknowledged' WHEN unack_at IS NOT NULL THEN 'triggered'
                    WHEN ack_at IS NOT NULL THEN 'acknowledged' ELSE 'triggered' END AS status,
               coalesce(res2_at, ack3_at, reopen_at, res_at, ack2_at, unack_at, ack_at, t0) AS last_status_change_at,
               greatest(t0 + interval '2 seconds', esc_at + interval '1 second', reassign_at + interval '1 second',
                        ack_at, unack_at + interval '1 second', ack2_at, res_at, reopen_at + interval '2 seconds',
                        ack3_at, res2_at) AS updated_at,
               coalesce(reopen_at + interval '1 second', reassign_at, esc_at, t0 + interval '1 second') AS assigned_at
          FROM plan p) p"""

# the references every log entry repeats, made once: per user (people), per service (with its integration) and
# per incident (refs)
PEOPLE_SQL = f"""
CREATE TEMP TABLE people AS
SELECT substr(u.id, 4)::int AS n, u.id, u.name,
       jsonb_build_object('id', u.id, 'type', 'user_reference', 'summary', u.name,
                          'self', '{API}/users/' || u.id, 'html_url', '{WEB}/users/' || u.id) AS ref
  FROM pagerduty.users u"""

SERVICE_REFS_SQL = f"""
CREATE TEMP TABLE service_refs AS
SELECT substr(s.id, 4)::int AS n, s.id, s.name,
       jsonb_build_object('id', s.id, 'type', 'service_reference', 'summary', s.name,
                          'self', '{API}/services/' || s.id, 'html_url', '{WEB}/services/' || s.id) AS ref,
       jsonb_build_object('id', 'PIN' || substr(s.id, 4), 'type', 'events_api_v2_inbound_integration_reference',
                          'summary', 'Monitoring',
                          'self', '{API}/services/' || s.id || '/integrations/PIN' || substr(s.id, 4)) AS integration
  FROM pagerduty.services s"""

TEAM_REFS = f"""(SELECT array_agg(jsonb_build_object('id', t.id, 'type', 'team_reference', 'summary', t.name,
                                                  'self', '{API}/teams/' || t.id, 'html_url', '{WEB}/teams/' || t.id)
                               ORDER BY t.id)
                    FROM pagerduty.teams t)"""

REFS_SQL = f"""
CREATE TEMP TABLE refs AS
SELECT p.i, p.id,
       jsonb_build_object('id', p.id, 'type', 'incident_reference', 'summary', '[#' || p.i || '] ' || title,
                          'self', '{API}/incidents/' || p.id, 'html_url', '{WEB}/incidents/' || p.id) AS inc_ref,
       s.ref AS svc_ref, s.integration,
       CASE WHEN p.team1 IS NULL THEN '[]'::jsonb
            WHEN p.team2 IS NULL THEN jsonb_build_array(tr.a[p.team1])
            ELSE jsonb_build_array(tr.a[p.team1], tr.a[p.team2]) END AS teams,
       title
  FROM plan p
  JOIN service_refs s ON s.n = p.svc
 CROSS JOIN (SELECT {TEAM_REFS} AS a) tr
 CROSS JOIN LATERAL (SELECT (ARRAY['High error rate', 'Latency above SLO', 'Disk almost full', 'Queue backlog',
                                   'Crash loop', 'Certificate expires soon', 'Health check failing',
                                   'Replication lag'])[p.i % 8 + 1] || ' on ' || s.name AS title) t"""

UREF = "u.ref"

INCIDENTS_SQL = f"""
INSERT INTO pagerduty.incidents (id, incident_number, title, status, urgency, service_id, escalation_policy_id,
                                 priority_id, created_at, updated_at, resolved_at, last_status_change_at,
                                 incident_key, raw)
SELECT p.id, p.i, r.title, st.status, p.urgency, r.svc_ref ->> 'id', ep, pr.id, p.t0, st.updated_at, resolved_at,
       st.last_status_change_at, p.incident_key,
       jsonb_build_object(
         'id', p.id, 'type', 'incident', 'summary', r.inc_ref ->> 'summary', 'self', r.inc_ref ->> 'self',
         'html_url', r.inc_ref ->> 'html_url', 'incident_number', p.i, 'title', r.title, 'description', r.title,
         'created_at', {_ts('p.t0')}, 'updated_at', {_ts('st.updated_at')}, 'status', st.status,
         'incident_key', p.incident_key, 'service', r.svc_ref,
         'assignments', CASE WHEN st.status = 'resolved' THEN '[]'::jsonb
                             ELSE jsonb_build_array(jsonb_build_object('at', {_ts('st.assigned_at')},
                                                                       'assignee', {UREF})) END,
         'assigned_via', 'escalation_policy', 'last_status_change_at', {_ts('st.last_status_change_at')},
         'resolved_at', {_ts('resolved_at')},
         'first_trigger_log_entry', jsonb_build_object(
             'id', 'R' || upper(lpad(to_hex(p.i::bigint * 32 + 1), 12, '0')), 'type', 'trigger_log_entry_reference',
             'self', '{API}/log_entries/R' || upper(lpad(to_hex(p.i::bigint * 32 + 1), 12, '0'))),
         'pending_actions', '[]'::jsonb, 'is_mergeable', true,
         'escalation_policy', CASE WHEN ep IS NOT NULL THEN jsonb_build_object('id', ep,
                                   'type', 'escalation_policy_reference', 'summary', epn,
                                   'self', '{API}/escalation_policies/' || ep) END,
         'teams', r.teams,
         'acknowledgements', CASE WHEN st.status = 'acknowledged'
                                  THEN jsonb_build_array(jsonb_build_object(
                                         'at', {_ts('coalesce(p.ack3_at, p.ack2_at, p.ack_at)')},
                                         'acknowledger', {UREF})) ELSE '[]'::jsonb END,
         'last_status_change_by', CASE WHEN st.status = 'acknowledged' THEN {UREF} ELSE r.svc_ref END,
         'priority', CASE WHEN pr.id IS NOT NULL THEN jsonb_build_object('id', pr.id, 'type', 'priority_reference',
                                                                         'summary', pr.name) END,
         'resolve_reason', CASE WHEN p.merged_into IS NOT NULL AND st.status = 'resolved'
                                THEN jsonb_build_object('type', 'merge_resolve_reason', 'incident',
                                       jsonb_build_object('id', p.merged_into, 'type', 'incident_reference',
                                                          'self', '{API}/incidents/' || p.merged_into)) END,
         'urgency', p.urgency, 'conference_bridge', NULL,
         'incident_type', jsonb_build_object('name', 'incident_default'))
       || CASE WHEN p.no_alert_counts THEN '{{}}'::jsonb
               ELSE jsonb_build_object('alert_counts', jsonb_build_object(
                      'all', p.alerts, 'triggered', CASE WHEN st.status = 'resolved' THEN 0 ELSE p.alerts END,
                      'resolved', CASE WHEN st.status = 'resolved' THEN p.alerts ELSE 0 END)) END
  FROM plan p
  JOIN state st USING (i)
  JOIN refs r USING (i)
  JOIN people u ON u.n = st.current_user_n
  LEFT JOIN pagerduty.priorities pr ON pr.id = 'PPR' || lpad(p.prio::text, 4, '0')
 CROSS JOIN LATERAL (SELECT CASE WHEN p.svc <= {FULL_SERVICES} THEN 'PEP' || lpad(p.tm::text, 4, '0') END AS ep,
                            ({_arr(TEAMS)})[p.tm] || ' on-call' AS epn,
                            CASE WHEN st.status = 'resolved' THEN coalesce(p.res2_at, p.res_at) END AS resolved_at) x
"""

# One row per log entry: (slot, type, time, agent kind, agent user, channel, notified or assigned user); slots
# number the entries of an incident (ids follow them). Agent kinds: 'user', 'service', 'integration'.
EVENTS = """
CROSS JOIN LATERAL (VALUES
  (1, 'trigger_log_entry', p.t0, CASE WHEN p.manual THEN 'user' ELSE 'integration' END, p.assignee,
      CASE WHEN p.manual THEN 'web_trigger' ELSE 'api' END, NULL::int),
  (2, 'assign_log_entry', p.t0 + interval '1 second', 'service', NULL, 'auto', p.assignee),
  (3, 'notify_log_entry', p.t0 + interval '2 seconds', 'service', NULL, 'auto', p.assignee),
  (4, 'notify_log_entry', CASE WHEN p.n_notify >= 2 AND p.t0 + interval '122 seconds' < p.quiet_at
                               THEN p.t0 + interval '122 seconds' END, 'service', NULL, 'auto', p.assignee),
  (5, 'notify_log_entry', CASE WHEN p.n_notify >= 3 AND p.t0 + interval '242 seconds' < p.quiet_at
                               THEN p.t0 + interval '242 seconds' END, 'service', NULL, 'auto', p.assignee),
  (6, 'escalate_log_entry', p.esc_at, 'service', NULL, 'timeout', p.esc_user),
  (7, 'notify_log_entry', p.esc_at + interval '1 second', 'service', NULL, 'auto', p.esc_user),
  (8, 'assign_log_entry', p.reassign_at, 'user', p.assignee, 'web', p.re_user),
  (9, 'notify_log_entry', p.reassign_at + interval '1 second', 'service', NULL, 'auto', p.re_user),
  (10, 'acknowledge_log_entry', p.ack_at, 'user', p.ack_user,
       CASE WHEN p.r_channel < 0.5 THEN 'mobile' WHEN p.r_channel < 0.8 THEN 'web' ELSE 'sms' END, NULL),
  (11, 'unacknowledge_log_entry', p.unack_at, 'service', NULL, 'timeout', NULL),
  (12, 'notify_log_entry', p.unack_at + interval '1 second', 'service', NULL, 'auto', p.ack_user),
  (13, 'acknowledge_log_entry', p.ack2_at, 'user', p.ack_user, 'mobile', NULL),
  (14, 'resolve_log_entry', p.res_at,
       CASE p.res_kind WHEN 'user' THEN 'user' WHEN 'merge' THEN 'user' WHEN 'integration' THEN 'integration'
                       ELSE 'service' END,
       CASE WHEN p.res_kind IN ('user', 'merge') THEN p.ack_user END,
       CASE p.res_kind WHEN 'timeout' THEN 'timeout' WHEN 'integration' THEN 'api' WHEN 'service' THEN 'auto'
                       ELSE 'web' END, NULL),
  (15, 'trigger_log_entry', p.reopen_at, 'integration', NULL, 'api', NULL),
  (16, 'assign_log_entry', p.reopen_at + interval '1 second', 'service', NULL, 'auto', p.assignee),
  (17, 'notify_log_entry', p.reopen_at + interval '2 seconds', 'service', NULL, 'auto', p.assignee),
  (18, 'acknowledge_log_entry', p.ack3_at, 'user', p.assignee, 'mobile', NULL),
  (19, 'resolve_log_entry', p.res2_at, 'user', p.assignee, 'web', NULL)
) e (slot, type, at, agent_kind, agent_user, channel, target_user)"""

VERB = {"trigger_log_entry": "Triggered through the API", "assign_log_entry": "Assigned to",
        "notify_log_entry": "Notified", "escalate_log_entry": "Escalated to level 2 by timeout, assigned to",
        "acknowledge_log_entry": "Acknowledged by", "unacknowledge_log_entry": "Unacknowledged due to timeout",
        "resolve_log_entry": "Resolved by"}
_VERB_CASE = "CASE e.type " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in VERB.items()) + " END"

LOG_ENTRIES_SQL = f"""
INSERT INTO pagerduty.log_entries (id, incident_id, type, created_at, agent_type, agent_id, channel_type, raw)
SELECT lid, p.id, e.type, e.at, agent ->> 'type', agent ->> 'id', e.channel,
       CASE WHEN extra IS NULL THEN entry ELSE entry || extra END
  FROM plan p
  JOIN refs r USING (i)
{EVENTS}
  LEFT JOIN people au ON au.n = e.agent_user
  LEFT JOIN people tu ON tu.n = e.target_user
 CROSS JOIN LATERAL (SELECT 'R' || upper(lpad(to_hex(p.i::bigint * 32 + e.slot), 12, '0')) AS lid,
                            CASE e.agent_kind WHEN 'user' THEN au.ref WHEN 'integration' THEN r.integration
                                              ELSE r.svc_ref END AS agent) a
 CROSS JOIN LATERAL (SELECT
       jsonb_build_object('id', lid, 'type', e.type,
                          'summary', {_VERB_CASE} || coalesce(' ' || coalesce(tu.name, au.name), '') || '.',
                          'self', '{API}/log_entries/' || lid,
                          'html_url', '{WEB}/incidents/' || p.id || '/log_entries/' || lid,
                          'created_at', {_ts('e.at')}, 'agent', agent,
                          'channel', CASE WHEN e.type = 'trigger_log_entry' AND NOT p.manual
                                          THEN jsonb_build_object('type', e.channel, 'summary', r.title,
                                                 'details', jsonb_build_object('check', p.incident_key,
                                                                               'severity', 'critical'))
                                          ELSE jsonb_build_object('type', e.channel) END,
                          'service', r.svc_ref, 'incident', r.inc_ref, 'teams', r.teams, 'contexts', '[]'::jsonb,
                          'event_details', CASE WHEN e.type = 'trigger_log_entry'
                                                THEN jsonb_build_object('description', r.title)
                                                ELSE '{{}}'::jsonb END) AS entry,
       CASE WHEN e.type = 'notify_log_entry' THEN jsonb_build_object(
                 'user', tu.ref,
                 'notification', jsonb_build_object(
                   'type', (ARRAY['push_notification', 'sms_notification', 'phone_notification'])[1 + (e.slot % 3)],
                   'status', 'success', 'address', tu.id || '@device'))
            WHEN e.type IN ('assign_log_entry', 'escalate_log_entry') THEN jsonb_build_object(
                 'assignees', jsonb_build_array(tu.ref)) END AS extra) x
 WHERE e.at IS NOT NULL AND e.at < (SELECT end_at FROM bounds)"""

TEAMS_SQL = """
INSERT INTO pagerduty.incident_teams (incident_id, team_id)
SELECT p.id, 'PTM' || lpad(t::text, 4, '0')
  FROM plan p CROSS JOIN LATERAL (VALUES (p.team1), (p.team2)) x (t)
 WHERE t IS NOT NULL
"""

ASSIGNMENTS_SQL = """
INSERT INTO pagerduty.incident_assignments (incident_id, user_id, assigned_at)
SELECT p.id, 'PUS' || lpad(st.current_user_n::text, 4, '0'), st.assigned_at
  FROM plan p JOIN state st USING (i)
 WHERE st.status <> 'resolved'
"""

# the alert rows the pipeline's alert policy loaded: for ~10 % of the incidents, and for those without
# alert_counts (whose alert count falls back to these rows)
ALERTS_SQL = f"""
INSERT INTO pagerduty.alerts (id, incident_id, status, alert_key, severity, service_id, created_at, raw)
SELECT aid, p.id, ast, p.incident_key, 'critical', r.svc_ref ->> 'id', p.t0,
       jsonb_build_object('id', aid, 'type', 'alert', 'summary', r.title, 'self', '{API}/alerts/' || aid,
                          'html_url', '{WEB}/alerts/' || aid, 'created_at', {_ts('p.t0')}, 'status', ast,
                          'alert_key', p.incident_key, 'service', r.svc_ref, 'incident', r.inc_ref,
                          'severity', 'critical', 'suppressed', false,
                          'body', jsonb_build_object('type', 'alert_body',
                                                     'details', jsonb_build_object('check', p.incident_key)))
  FROM plan p JOIN state st USING (i) JOIN refs r USING (i)
 CROSS JOIN LATERAL generate_series(1, CASE WHEN p.no_alert_counts THEN 1 + p.i % 3 ELSE p.alerts END) a
 CROSS JOIN LATERAL (SELECT 'A' || upper(lpad(to_hex(p.i::bigint * 16 + a), 12, '0')) AS aid,
                            CASE WHEN st.status = 'resolved' THEN 'resolved' ELSE 'triggered' END AS ast) x
 WHERE (p.alert_rows OR p.no_alert_counts) AND NOT p.manual
"""

DATA_TABLES = ("teams", "users", "escalation_policies", "priorities", "services", "incidents", "incident_teams",
               "incident_assignments", "log_entries", "alerts", "notes")


LOADED = ("incidents", "incident_teams", "incident_assignments", "log_entries", "alerts")

SECONDARY_INDEXES_SQL = """
SELECT ix.indexrelid::regclass::text, pg_get_indexdef(ix.indexrelid)
  FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid
 WHERE t.relnamespace = 'pagerduty'::regnamespace AND t.relname = ANY(CAST(:tables AS text[]))
   AND NOT ix.indisprimary AND NOT ix.indisunique"""
FOREIGN_KEYS_SQL = """
SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint
 WHERE contype = 'f' AND connamespace = 'pagerduty'::regnamespace
   AND conrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'pagerduty'::regnamespace
                                               AND relname = ANY(CAST(:tables AS text[])))"""


def set_aside(admin) -> list[str]:
    """Drop the secondary indexes and the foreign keys of the tables about to be filled, as pg_restore does (one
    index build and one validation afterwards are much faster than a check and five index insertions per row);
    returns the statements that bring them back (the foreign keys are validated when added)."""
    indexes = admin.run(SECONDARY_INDEXES_SQL, tables=list(LOADED))
    fks = admin.run(FOREIGN_KEYS_SQL, tables=list(LOADED))
    for table, name, _definition in fks:
        admin.run(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for name, _definition in indexes:
        admin.run(f"DROP INDEX {name}")
    return [definition for _name, definition in indexes] + [
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in fks]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc), e.g. a PostgreSQL backend."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def generate(admin, n: int, start: datetime, end: datetime, seed: float) -> tuple[dict, float]:
    """Fill schema pagerduty (empty, migrated) with n incidents over [start, end); returns the wall time of each
    step and the CPU time of the server process that did it all (the wall time minus that is waiting: for the
    disk, or for a core on a busy machine)."""
    timings: dict[str, float] = {}
    pid = admin.run("SELECT pg_backend_pid()")[0][0]
    cpu0 = cpu_seconds(pid)

    def step(name: str, sql: str, **params) -> None:
        t = time.perf_counter()
        admin.run(sql, **params)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t

    admin.run("SET TimeZone = 'UTC'")
    admin.run("SET jit = off")  # compiling these one-off expressions would take longer than running them
    admin.run("SET maintenance_work_mem = '256MB'")
    admin.run("SELECT setseed(:s)", s=seed)
    admin.run("BEGIN")
    admin.run("CREATE TEMP TABLE bounds AS SELECT CAST(:start AS timestamptz) AS start_at, "
              "CAST(:end AS timestamptz) AS end_at, CAST(:n AS integer) AS n", start=start, end=end, n=n)
    admin.run("ANALYZE bounds")
    for sql in DIMENSIONS_SQL:
        step("reference data", sql)
    step("plan", PLAN_RANDOM_SQL)
    admin.run("ANALYZE plan_random")
    step("plan", PLAN_SQL)
    step("plan", STATE_SQL)
    step("plan", PEOPLE_SQL)
    step("plan", SERVICE_REFS_SQL)
    step("plan", REFS_SQL)
    for table in ("plan", "state", "refs", "people", "service_refs"):
        admin.run(f"ANALYZE {table}")
    restore = set_aside(admin)
    step("incidents", INCIDENTS_SQL)
    step("incident_teams", TEAMS_SQL)
    step("incident_assignments", ASSIGNMENTS_SQL)
    step("log_entries", LOG_ENTRIES_SQL)
    step("alerts", ALERTS_SQL)
    for sql in restore:
        step("indexes and foreign keys", sql)
    admin.run("COMMIT")
    return timings, cpu_seconds(pid) - cpu0


def row_counts(conn) -> dict[str, int]:
    return {t: conn.run(f"SELECT count(*) FROM pagerduty.{t}")[0][0] for t in DATA_TABLES}


# -- checks of the generated data -------------------------------------------------------------------------------
STATUS_OF = {"trigger_log_entry": "triggered", "unacknowledge_log_entry": "triggered",
             "acknowledge_log_entry": "acknowledged", "resolve_log_entry": "resolved"}

TIMELINE_CHECKS = {
    "log entry before its incident was created":
        "SELECT count(*) FROM pagerduty.log_entries l JOIN pagerduty.incidents i ON i.id = l.incident_id "
        "WHERE l.created_at < i.created_at",
    "incident whose latest status entry disagrees with its status": f"""
        SELECT count(*) FROM pagerduty.incidents i
          JOIN LATERAL (SELECT l.type FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                           AND l.type IN ({", ".join(f"'{t}'" for t in STATUS_OF)})
                         ORDER BY l.created_at DESC LIMIT 1) l ON true
         WHERE i.status IS DISTINCT FROM CASE l.type {" ".join(f"WHEN '{t}' THEN '{s}'" for t, s in STATUS_OF.items())}
                                         END""",
    "status entries of one incident in the same second": """
        SELECT count(*) FROM (SELECT 1 FROM pagerduty.log_entries
                               WHERE type IN ('trigger_log_entry', 'unacknowledge_log_entry', 'acknowledge_log_entry',
                                              'resolve_log_entry')
                               GROUP BY incident_id, created_at HAVING count(*) > 1) x""",
    "resolved incident whose resolved_at is not its latest resolve entry": """
        SELECT count(*) FROM pagerduty.incidents i
         WHERE i.status = 'resolved' AND i.resolved_at IS DISTINCT FROM
               (SELECT max(created_at) FROM pagerduty.log_entries l
                 WHERE l.incident_id = i.id AND l.type = 'resolve_log_entry')""",
    "open incident with resolved_at": "SELECT count(*) FROM pagerduty.incidents WHERE status <> 'resolved' "
                                      "AND resolved_at IS NOT NULL",
    "notify entry without a user": "SELECT count(*) FROM pagerduty.log_entries WHERE type = 'notify_log_entry' "
                                   "AND raw -> 'user' ->> 'id' IS NULL",
    "merged incident pointing to an unknown incident": """
        SELECT count(*) FROM pagerduty.incidents i WHERE i.raw -> 'resolve_reason' ->> 'type' = 'merge_resolve_reason'
           AND NOT EXISTS (SELECT 1 FROM pagerduty.incidents m
                            WHERE m.id = i.raw -> 'resolve_reason' -> 'incident' ->> 'id')""",
    "incident whose raw teams differ from incident_teams": """
        SELECT count(*) FROM pagerduty.incidents i
         WHERE (SELECT coalesce(array_agg(t ->> 'id' ORDER BY t ->> 'id'), '{}')
                  FROM jsonb_array_elements(i.raw -> 'teams') t)
               IS DISTINCT FROM (SELECT coalesce(array_agg(team_id ORDER BY team_id), '{}')
                                   FROM pagerduty.incident_teams it WHERE it.incident_id = i.id)""",
    "loaded alert rows that differ from alert_counts.all": """
        SELECT count(*) FROM (SELECT a.incident_id, count(*) AS n FROM pagerduty.alerts a GROUP BY 1) a
          JOIN pagerduty.incidents i ON i.id = a.incident_id
         WHERE i.raw ? 'alert_counts' AND (i.raw -> 'alert_counts' ->> 'all')::int <> a.n""",
    "foreign key not validated": "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                                 "AND connamespace = 'pagerduty'::regnamespace AND NOT convalidated",
}

MIX_SQL = """
SELECT count(*) AS incidents,
       avg((SELECT count(*) FROM pagerduty.log_entries l WHERE l.incident_id = i.id)) AS entries_per_incident,
       avg((EXISTS (SELECT 1 FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                      AND l.type = 'acknowledge_log_entry'))::int) AS acknowledged,
       avg((status = 'resolved')::int) AS resolved,
       avg((raw -> 'resolve_reason' ->> 'type' IS NOT DISTINCT FROM 'merge_resolve_reason')::int) AS merged,
       avg((EXISTS (SELECT 1 FROM pagerduty.log_entries l WHERE l.incident_id = i.id AND l.type = 'trigger_log_entry'
                      AND l.id <> 'R' || upper(lpad(to_hex(i.incident_number * 32 + 1), 12, '0'))))::int) AS reopened,
       avg((EXISTS (SELECT 1 FROM pagerduty.log_entries l WHERE l.incident_id = i.id
                      AND l.type = 'escalate_log_entry'))::int) AS escalated,
       avg(((SELECT count(*) FROM pagerduty.incident_teams t WHERE t.incident_id = i.id) = 0)::int) AS no_team,
       avg(((SELECT count(*) FROM pagerduty.incident_teams t WHERE t.incident_id = i.id) = 2)::int) AS two_teams,
       avg((urgency IS NULL)::int) AS null_urgency,
       min(created_at) AS first, max(created_at) AS last
  FROM pagerduty.incidents i"""


def check_data(conn, start: datetime, end: datetime) -> list[str]:
    """Problems found in the generated data (empty when consistent): the step-3 checks that compare the stored
    rows with each other (not with the API's totals) over the whole range, and the timelines."""
    problems = []
    scope = Scope(since=start, until=end + timedelta(seconds=1), filters={}, incidents_total=0,
                  log_entries_total=0, log_entries_filtered_out=0)
    for check in CHECKS:
        if check.name in ("incident_count_matches_api", "log_entry_count_matches_api"):
            continue
        outcome = check.evaluate(conn, scope)
        if check.name == "data_rules":  # warnings only; the null urgencies are made on purpose
            other = {r["reason"] for r in outcome.details["records"]} - {"urgency is null"}
            print(f"  step-3 check {check.name:36s} {outcome.failures:>8,} records listed"
                  + (" (null urgency, made on purpose)" if not other else f": {sorted(other)[:5]}"))
            if other:
                problems.append(f"{check.name}: {sorted(other)[:5]}")
            continue
        print(f"  step-3 check {check.name:36s} {outcome.failures:>8,} failures")
        if outcome.failures:
            problems.append(f"{check.name}: {outcome.failures} failures, e.g. {outcome.details.get('records', [])[:3]}")
    for label, sql in TIMELINE_CHECKS.items():
        found = conn.run(sql)[0][0]
        print(f"  {label:62s} {found:>8,}")
        if found:
            problems.append(f"{label}: {found}")
    return problems


# -- the migration's indexes ------------------------------------------------------------------------------------
CREATE_INDEX = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
                          r"([\w\"]+)\s+ON\s+(?:ONLY\s+)?([\w\".]+)", re.IGNORECASE)


def analytics_indexes(first_version: int = 6) -> list[tuple[int, str, str]]:
    """(migration, schema, index name) of every CREATE INDEX in the analytics migrations (6 and later)."""
    found = []
    for version, _name, statements in MIGRATIONS:
        if version < first_version:
            continue
        for sql in statements:
            for index, table in CREATE_INDEX.findall(sql):
                schema = table.split(".")[0].strip('"') if "." in table else "public"
                found.append((version, schema, index.strip('"')))
    return found


# -- the queries ------------------------------------------------------------------------------------------------
def queries(week: datetime) -> list[tuple[str, str]]:
    """(label, SQL) as an analyst or the report asks; ``week``: the Monday 00:00 UTC of the week looked at."""
    w0, w1 = f"'{week.isoformat()}'::timestamptz", f"'{(week + timedelta(days=7)).isoformat()}'::timestamptz"
    day = f"'{week.date().isoformat()}'::date"
    this_week = "date_trunc('week', now() AT TIME ZONE 'UTC')"
    return [
        ("account_weekly: all", "SELECT * FROM analytics.account_weekly"),
        ("service_weekly: all", "SELECT * FROM analytics.service_weekly"),
        ("team_weekly: all", "SELECT * FROM analytics.team_weekly"),
        ("responder_weekly: all", "SELECT * FROM analytics.responder_weekly"),
        ("noisy_services: all", "SELECT * FROM analytics.noisy_services"),
        ("incidents: one week", f"SELECT * FROM analytics.incidents WHERE created_at >= {w0} AND created_at < {w1}"),
        ("incidents: count(*)", "SELECT count(*) FROM analytics.incidents"),
        ("incidents: one by number", "SELECT * FROM analytics.incidents WHERE incident_number = 1000"),
        ("service_weekly: last 12 weeks",
         f"SELECT * FROM analytics.service_weekly WHERE week_start >= {this_week} - interval '12 weeks' "
         "ORDER BY week_start, service_name"),
        ("responder_weekly: one week", f"SELECT * FROM analytics.responder_weekly WHERE week_start = {day} "
                                       "ORDER BY notifications_off_hours DESC"),
        # docs/analytics.md, "Example queries"
        ("doc: noisiest services, 4 weeks", f"""
            SELECT service_name, sum(incidents) AS incidents, sum(alerts) AS alerts,
                   sum(resolved_within_5m) AS flaps, sum(repeated_key_incidents) AS repeats
              FROM analytics.noisy_services WHERE week_start >= {this_week} - interval '4 weeks'
             GROUP BY service_name ORDER BY incidents DESC LIMIT 10"""),
        ("doc: merged incidents", "SELECT incident_number, title, merged_into_incident_id FROM analytics.incidents "
                                  "WHERE is_merged"),
        ("doc: team medians week over week", """
            SELECT team_name, week_start, round(resolve_p50_seconds / 60) AS resolve_p50_min,
                   round(resolve_p50_seconds / 60) - lag(round(resolve_p50_seconds / 60))
                     OVER (PARTITION BY team_id ORDER BY week_start) AS change_min
              FROM analytics.team_weekly ORDER BY team_name, week_start"""),
    ]


def report_reader():
    """tools/report.py's read_figures (the report's queries), when it is there."""
    try:
        from tools.report import DEFAULT_WEEKS, read_figures
    except Exception:  # noqa: BLE001 - the report is someone else's and optional here
        return None
    def read(conn) -> list:
        figures = read_figures(conn, DEFAULT_WEEKS)
        return figures.weekly + figures.services + figures.responders

    return read


def plan_summary(plan: dict) -> tuple[str, list[str]]:
    """The top plan node ("Sort", "HashAggregate" …) and the scans of the plan ("Index Only Scan log_entries_…",
    "Seq Scan log_entries"), each once, in the order met."""
    scans: list[str] = []

    def walk(node: dict) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind and kind not in ("Subquery Scan", "CTE Scan", "Function Scan", "Values Scan",
                                           "WorkTable Scan"):
            label = kind + " " + (node.get("Index Name") or node.get("Relation Name") or "")
            if kind == "Bitmap Heap Scan":
                label = ""  # the bitmap index scan under it names the index
            if label and label not in scans:
                scans.append(label)
        for child in node.get("Plans", []):
            walk(child)

    top = plan["Plan"]
    walk(top)
    name = top["Node Type"]
    if name == "Aggregate":
        name = {"Sorted": "GroupAggregate", "Hashed": "HashAggregate", "Mixed": "MixedAggregate"}.get(
            top.get("Strategy"), name)
    return name, scans


def explain(conn, sql: str) -> dict:
    text = conn.run("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)[0][0]
    doc = (json.loads(text) if isinstance(text, str) else text)[0]
    top, scans = plan_summary(doc)
    plan = doc["Plan"]

    return {"server_ms": doc["Execution Time"], "top": top, "scans": scans,
            "temp_mb": plan.get("Temp Written Blocks", 0) * 8 / 1024,
            "jit_ms": doc.get("JIT", {}).get("Timing", {}).get("Total", 0.0),
            "hit": plan.get("Shared Hit Blocks", 0), "read": plan.get("Shared Read Blocks", 0)}


def explain_text(conn, sql: str) -> str:
    return "\n".join(r[0] for r in conn.run("EXPLAIN (ANALYZE, BUFFERS) " + sql))


def server_cpu(datadir: str) -> float:
    """CPU seconds (user + system) the whole PostgreSQL server has used so far: the postmaster, its live children
    (backends, parallel workers) and its exited ones. On a busy machine a query's wall time also counts the waits
    for a core; its CPU time does not."""
    try:
        with open(os.path.join(datadir, "postmaster.pid")) as fh:
            master = int(fh.readline())
    except (OSError, ValueError):
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == master:
            total += sum(int(f) for f in fields[11:15]) / tick  # its own and its exited children's
        elif int(fields[1]) == master:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def time_query(conn, run, repeats: int, cpu=lambda: float("nan")) -> tuple[int | None, float, float]:
    """(rows, best ms over ``repeats`` runs after one warm-up, the server's mean CPU ms per timed run); rows None
    when the query timed out."""
    best = float("inf")
    rows = None
    cpu0 = 0.0
    for k in range(repeats + 1):
        if k == 1:
            cpu0 = cpu()
        t = time.perf_counter()
        try:
            result = run()
        except pg8000.native.DatabaseError as exc:
            if "statement timeout" in str(exc) or "57014" in str(exc):
                return None, float("inf"), float("nan")
            raise
        elapsed = (time.perf_counter() - t) * 1000
        rows = len(result) if isinstance(result, list) else 1
        if k:
            best = min(best, elapsed)
    return rows, best, (cpu() - cpu0) * 1000 / max(repeats, 1)


def run_queries(conn, week: datetime, repeats: int, only: list[str] = (), cpu=lambda: float("nan"),
                with_plans: bool = True) -> dict[str, dict]:
    out: dict[str, dict] = {}
    print(f"    {'':34s} {'':>8s}      {'best':>10s} {'server CPU':>10s}   load average {os.getloadavg()[0]:.1f}")
    for label, sql in queries(week):
        if only and not any(text in label for text in only):
            continue
        rows, ms, cpu_ms = time_query(conn, lambda: conn.run(sql), repeats, cpu)
        entry = {"rows": rows, "ms": ms, "cpu_ms": cpu_ms, "sql": sql}
        if with_plans and rows is not None:
            try:
                entry.update(explain(conn, sql))
            except pg8000.native.DatabaseError as exc:  # the statement timeout, under EXPLAIN ANALYZE's overhead
                entry["plan_error"] = str(exc)[:80]
        out[label] = entry
        print(f"    {label:34s} {_num(rows):>8s} rows {_ms(ms):>10s} {_ms(cpu_ms):>10s}", flush=True)
    reader = report_reader()
    if reader is not None and (not only or any(text in "report" for text in only)):
        label = "report: read_figures (12 weeks)"
        rows, ms, cpu_ms = time_query(conn, lambda: reader(conn), repeats, cpu)
        out[label] = {"rows": rows, "ms": ms, "cpu_ms": cpu_ms, "sql": None}
        print(f"    {label:34s} {_num(rows):>8s} rows {_ms(ms):>10s} {_ms(cpu_ms):>10s}", flush=True)
    return out


def _ms(ms: float | None) -> str:
    if ms is None or ms != ms:
        return "-"
    return "timeout" if ms == float("inf") else f"{ms:,.0f} ms"


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


# -- sizes and memory -------------------------------------------------------------------------------------------
SIZES_SQL = """
SELECT c.relnamespace::regnamespace || '.' || c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid),
       pg_total_relation_size(c.oid)
  FROM pg_class c WHERE c.relnamespace::regnamespace::text IN ('pagerduty', 'analytics') AND c.relkind = 'r'
 ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 8"""


def _mb(b: int) -> str:
    return f"{b / 2 ** 20:,.0f} MB"


def backend_peak_rss(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return f"{int(line.split()[1]) / 1024:,.0f} MB"
    except OSError:
        pass
    return "?"


def main() -> None:
    # a stopped run still stops and deletes its throwaway server (the context manager's exit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=200_000)
    ap.add_argument("--days", type=float, default=182, help="the span of the incidents, up to now")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per query, after one warm-up")
    ap.add_argument("--seed", type=float, default=0.42)
    ap.add_argument("--timeout", type=int, default=300, help="statement timeout of a timed query, seconds")
    ap.add_argument("--load-only", action="store_true", help="generate and check the data, time nothing")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="time only the queries whose label contains TEXT (repeatable)")
    ap.add_argument("--also", action="append", default=[], metavar="SQL",
                    help="a third variant: the migrations' indexes plus this statement, run as the superuser, "
                         "e.g. a candidate index (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="in that third variant, this setting in the analyst's session, e.g. jit=off (repeatable)")
    ap.add_argument("--no-plans", dest="plans", action="store_false",
                    help="do not print the EXPLAIN (ANALYZE, BUFFERS) of the queries slower than 3 s")
    args = ap.parse_args()

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    this_monday = (end - timedelta(days=end.weekday())).replace(hour=0)
    week = this_monday - timedelta(days=7)  # the last whole week
    print(f"analytics views over {args.incidents:,} incidents from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} "
          f"UTC ({args.days:g} days), seed {args.seed}")

    with throwaway_postgres() as pg:
        conn = pg.connect()
        # the data goes in as a deployment from before the analytics migration holds it; migration 6 then
        # fills its trigger-kept tables from the stored log (the upgrade path, timed below). Generating it with
        # the trigger on would put 1.2 million rows through one statement's transition table, as no load does.
        before = [m for m in migrations.MIGRATIONS if m[0] < ANALYTICS_MIGRATION]
        with mock.patch.object(migrations, "MIGRATIONS", before):
            migrate(conn)
        admin = pg.admin_connect()
        settings = dict(admin.run("SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                                  "('server_version', 'work_mem', 'shared_buffers', 'max_parallel_workers_per_gather',"
                                  " 'effective_cache_size', 'random_page_cost', 'jit')"))
        print("server: " + ", ".join(f"{k} {v}" for k, v in sorted(settings.items())))

        t0 = time.perf_counter()
        timings, cpu = generate(admin, args.incidents, start, end, args.seed)
        load_s = time.perf_counter() - t0
        counts = row_counts(admin)
        print(f"\nload: {load_s:.1f} s, of which the server's CPU {cpu:.1f} s ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f"); load average {os.getloadavg()[0]:.1f}")
        print("rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        t = time.perf_counter()
        admin.run("VACUUM (ANALYZE) pagerduty.incidents, pagerduty.log_entries, pagerduty.incident_teams, "
                  "pagerduty.incident_assignments, pagerduty.alerts, pagerduty.teams, pagerduty.users, "
                  "pagerduty.services, pagerduty.priorities, pagerduty.escalation_policies")
        print(f"VACUUM (ANALYZE): {time.perf_counter() - t:.1f} s")

        print("\nthe data:")
        mix = admin.run(MIX_SQL)[0]
        names = [c["name"] for c in admin.columns]
        print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) or type(v).__name__ == "Decimal" else
                               f"{k} {v}" for k, v in zip(names, mix)))
        problems = check_data(admin, start, end)
        if problems:
            raise SystemExit("the generated data is inconsistent:\n  " + "\n  ".join(problems))
        print("  consistent (and every foreign key validated when it was added back)")
        t = time.perf_counter()
        applied = migrate(conn)
        # every table of the analytics schema, and pagerduty.incidents (an added stored column rewrites it: its
        # visibility map and statistics start over)
        admin.run("VACUUM (ANALYZE) pagerduty.incidents")
        for (table,) in admin.run("SELECT tablename FROM pg_tables WHERE schemaname = 'analytics'"):
            admin.run(f"VACUUM (ANALYZE) analytics.{pg8000.native.identifier(table)}")
        print(f"\nmigrations {applied} over the stored data (views, trigger, indexes, the backfill of "
              f"analytics.incident_log_facts and analytics.notifications, then VACUUM ANALYZE): "
              f"{time.perf_counter() - t:.1f} s")
        db_size = admin.run("SELECT pg_database_size(current_database())")[0][0]
        print(f"\ndatabase size: {_mb(db_size)}; largest tables (table / indexes / total):")
        for name, table, indexes, total in admin.run(SIZES_SQL):
            print(f"  {name:34s} {_mb(table):>9s} {_mb(indexes):>9s} {_mb(total):>9s}")
        if args.load_only:
            return

        views = admin.run("SELECT count(*) FROM pg_views WHERE schemaname = 'analytics'")[0][0]
        if not views:
            print("\nno views in schema analytics yet (migration 6 not there): nothing to time")
            return

        # the analyst: a login in pagerduty_reader, as README's "Database access" gives one
        password = "an-" + secrets.token_hex(8)
        admin.run(f"CREATE ROLE {ANALYST} LOGIN PASSWORD {pg8000.native.literal(password)} IN ROLE pagerduty_reader")
        analyst = pg.connect(user=ANALYST, password=password)
        analyst.run(f"SET statement_timeout = '{args.timeout}s'")
        analyst_pid = analyst.run("SELECT pg_backend_pid()")[0][0]
        cpu = functools.partial(server_cpu, pg.datadir)

        indexes = analytics_indexes()
        defs = {}
        for version, schema, name in indexes:
            row = admin.run("SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND indexname = :n",
                            s=schema, n=name)
            if row:
                defs[(schema, name)] = row[0][0]
        print("\nthe analytics migrations' indexes: "
              + ("; ".join(f"migration {v}: {defs.get((s, n), f'{s}.{n} (not found)')}" for v, s, n in indexes)
                 or "none"))

        variants: list[tuple[str, dict]] = []
        print(f"\nwith the migrations' indexes (best of {args.repeats} after a warm-up, rows fetched):")
        variants.append(("with idx", run_queries(analyst, week, args.repeats, args.only, cpu)))
        peak_with = backend_peak_rss(analyst_pid)
        if defs:
            t = time.perf_counter()
            for (schema, name) in defs:
                admin.run(f"DROP INDEX {pg8000.native.identifier(schema)}.{pg8000.native.identifier(name)}")
            analyze(admin)
            print(f"\nwithout them (dropped, re-analyzed in {time.perf_counter() - t:.1f} s):")
            variants.append(("without", run_queries(analyst, week, args.repeats, args.only, cpu)))
            t = time.perf_counter()
            for definition in defs.values():
                admin.run(definition)
            analyze(admin)
            print(f"  (recreated and re-analyzed in {time.perf_counter() - t:.1f} s)")
        if args.also or args.set:
            t = time.perf_counter()
            for sql in args.also:
                admin.run(sql)
            analyze(admin)
            for setting in args.set:
                name, _, value = setting.partition("=")
                analyst.run(f"SET {pg8000.native.identifier(name)} = {pg8000.native.literal(value)}")
            print(f"\nwith the migrations' indexes and --also / --set ({time.perf_counter() - t:.1f} s): "
                  + "; ".join(args.also + [f"SET {x}" for x in args.set]))
            variants.append(("also", run_queries(analyst, week, args.repeats, args.only, cpu)))

        base = variants[0][1]
        print(f"\n{'query':34s} {'rows':>8s} " + " ".join(f"{name:>19s}" for name, _ in variants)
              + f"  {'server ms':>9s} {'JIT ms':>7s} {'temp MB':>7s}")
        print(f"{'':34s} {'':>8s} " + " ".join(f"{'best (server CPU)':>19s}" for _ in variants)
              + "  (EXPLAIN ANALYZE with the migrations' indexes)")
        for label, entry in base.items():
            server = f"{entry['server_ms']:,.0f}" if "server_ms" in entry else ""
            jit = f"{entry['jit_ms']:,.0f}" if "jit_ms" in entry else ""
            temp = f"{entry['temp_mb']:.0f}" if "temp_mb" in entry else ""
            cells = []
            for _, results in variants:
                r = results.get(label)
                cells.append(f"{_ms(r['ms']) + ' (' + _ms(r['cpu_ms']).removesuffix(' ms') + ')' if r else '-':>19s}")
            print(f"{label:34s} {_num(entry['rows']):>8s} " + " ".join(cells) + f"  {server:>9s} {jit:>7s} {temp:>7s}")
        print("\nplans: the top node and the scans, in plan order")
        for label, entry in base.items():
            if entry.get("sql") is None:
                continue
            print(f"  {label}")
            shown = None
            for name, results in variants:
                other = results.get(label, {})
                plan = (f"{other['top']}: {', '.join(other['scans'])}" if "top" in other
                        else other.get("plan_error", "-"))
                print(f"    {name:9s} {'same' if plan == shown else plan}")
                shown = shown or plan

        slow = [(label, e) for label, e in base.items() if e["ms"] > SLOW_MS and e["sql"]]
        print(f"\nslower than {SLOW_MS / 1000:g} s with the migrations' indexes: "
              + (", ".join(label for label, _ in slow) or "none"))
        if args.plans:
            analyst.run("RESET ALL")
            analyst.run(f"SET statement_timeout = '{args.timeout}s'")
            for label, entry in slow:
                print(f"\n--- {label}: {_ms(entry['ms'])}\n{entry['sql'].strip()}\n")
                print(explain_text(analyst, entry["sql"]))

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nmemory: the analyst's backend peaked at {peak_with} RSS (with the migrations' indexes; the shared "
              f"buffers it touched included), this script at {rss:,.0f} MB; database {_mb(db_size)}")


def analyze(admin) -> None:
    for table in ("log_entries", "incidents"):
        admin.run(f"ANALYZE pagerduty.{table}")


if __name__ == "__main__":
    main()
