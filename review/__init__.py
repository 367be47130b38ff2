"""Plan review tooling: turn `terraform plan` output into reviewable Markdown.

- ``python -m review.plan_summary PLAN_JSON`` summarizes one ``terraform show -json`` plan.
- ``python -m review.plan_all`` synthesizes the CDKTF app and plans every stack.
- ``python -m review.pr_comment mark-stale`` marks a plan comment stale once a newer commit is pushed.
"""
