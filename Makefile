# One-command entry points; each sets up what it needs first (idempotent, fast when already done).
#   make run    synthesize every environment, validate it (Terraform, asl-validator, statelint), then run the
#               dev workflow locally: its state machine in moto with the real Lambdas, a throwaway PostgreSQL
#               and a sample PagerDuty account (docs/local-run.md; PAGERDUTY_TOKEN / DATABASE_URL switch them)
#   make report the incident report (analytics views) as one offline HTML file, from the local run's database or
#               DATABASE_URL's (docs/analytics.md, "The report")
#   make test   the whole test suite (what CI runs)
SHELL := /bin/bash
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
PIPENV_VERSION := 2026.10.3
PYTHON_VERSION := 3.13
PIPENV := python3 -m pipenv
CHECKOV := .tools/checkov/bin/checkov
CDKTN_ENV := .tools/cdktn/.installed

.PHONY: setup python-env node-env tools cdk-terrain-env cdk-terrain-check lock-providers run synth validate test bench clean rehearse rds-ca report browser
# The tests' stand-in for AWS's RDS CA bundle (tests/fixtures/tls/README.md): what the local run, the tests and the
# rehearsal pack into the functions. Deployable synths (make synth, the workflows) use certs/ (make rds-ca).
STAND_IN_CA := $(CURDIR)/tests/fixtures/tls/standin-rds-ca.pem
run report test rehearse cdk-terrain-check: export STEPFUNC_RDS_CA_BUNDLE := $(STAND_IN_CA)

setup: python-env node-env tools

python-env: .venv/.synced
.venv/.synced: Pipfile.lock
	python3 -m pip install --quiet --disable-pip-version-check "pipenv==$(PIPENV_VERSION)"
	$(PIPENV) sync --dev --python $(PYTHON_VERSION)
	touch $@

node-env: node_modules/.synced
node_modules/.synced: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# Scanners live in their own virtualenv: checkov pins boto3 to a version that conflicts with the app's.
tools: $(CHECKOV) cdk-terrain-env
$(CHECKOV): tools/checkov-requirements.txt .venv/.synced
	.venv/bin/python -m venv --clear .tools/checkov
	.tools/checkov/bin/pip install --quiet --disable-pip-version-check -r tools/checkov-requirements.txt
	touch $@

# CDK Terrain (cdktn), the community continuation of the archived CDKTF, in its own virtualenv: the app
# synthesized with it must give the default's Terraform JSON (docs/cdk-terrain.md). Rebuilt when the pins change.
# --no-compile: byte-compiling all ~2,200 provider modules takes 2+ minutes; the lazy import uses a few dozen.
cdk-terrain-env: $(CDKTN_ENV)
$(CDKTN_ENV): tools/cdktn-requirements.txt | .venv/.synced
	.venv/bin/python -m venv --clear .tools/cdktn
	.tools/cdktn/bin/pip install --quiet --disable-pip-version-check --no-compile -r tools/cdktn-requirements.txt
	touch $@

cdk-terrain-check: python-env cdk-terrain-env
	$(PIPENV) run python -m tools.cdk_terrain_check $(CHECK_ARGS)

synth: python-env
	$(PIPENV) run python main.py

# Add provider checksums for the platforms you deploy from to the committed lock file (needs the registry, so
# network): make lock-providers PLATFORMS="linux_amd64 darwin_arm64". Also the step after raising the provider
# version in modules/stack.py. README, "Provider versions".
PLATFORMS ?= linux_amd64 linux_arm64 darwin_amd64 darwin_arm64
LOCK_STACK := cdktf.out/stacks/stepfuncproject-state
lock-providers: synth
	terraform -chdir=$(LOCK_STACK) providers lock $(foreach platform,$(PLATFORMS),-platform=$(platform))
	cp $(LOCK_STACK)/.terraform.lock.hcl .terraform.lock.hcl

# AWS's RDS CA bundle and its SHA-256 pin into certs/ (needs the network; commit both). RDS_CA_ARGS=--accept-new
# takes a bundle AWS changed, after review. README, "Database access".
rds-ca: python-env
	$(PIPENV) run python -m tools.rds_ca fetch $(RDS_CA_ARGS)

validate: synth
	$(PIPENV) run python -m tools.validate cdktf.out

run: setup
	$(PIPENV) run python -m tools.local_run --all --outdir cdktf.out $(RUN_ARGS)

# Without DATABASE_URL it runs the local run (without validation), which writes the report before it stops its
# database; REPORT_ARGS: --out PATH, --weeks N, or the local run's options (--incidents 1000).
report: python-env
	$(PIPENV) run python -m tools.report $(REPORT_ARGS)

# Debian's Chromium, for the test that opens the report in a real headless browser (skipped without it, failed
# under CI=true). Installed only as root with apt-get; elsewhere the reason is printed and make carries on.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "browser: chromium is missing and not installed here (needs root and apt-get: apt-get install chromium); the report's browser test will be skipped"; \
	else \
		echo "browser: installing Debian's chromium (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "browser: apt-get could not install chromium; the report's browser test will be skipped (failed under CI=true)"; \
	fi

test: setup browser
	$(PIPENV) run pytest -n 2 $(PYTEST_ARGS)

# Deploy rehearsal: terraform apply of the dev stack into moto in-process, the workflow run through the
# deployed state machine, a second plan that must be empty, the second act, destroy (docs/rehearsal.md). ~7½ minutes.
# Keeps the stack's plan (real AWS resources, by the real provider) for the plan-review tests.
rehearse: python-env
	$(PIPENV) run python -m tools.rehearsal --keep-plan tests/rehearsal/stepfuncproject-dev.plan.json $(REHEARSE_ARGS)

bench: python-env
	$(PIPENV) run python bench/synth_speed.py
	$(PIPENV) run python bench/pipeline_load.py
	$(PIPENV) run python bench/step3_scaling.py
	$(PIPENV) run python bench/api_pace.py
	$(PIPENV) run python bench/analytics_views.py

clean:
	rm -rf cdktf.out .build .pytest_cache
