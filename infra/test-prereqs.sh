#!/usr/bin/env bash
# What `make test` needs from the machine beyond the virtualenv: Debian's Chromium (the browser
# tests; Playwright cannot download browsers here), the machine's PostgreSQL on 127.0.0.1:5432
# (the production-profile tests) and Redis on 127.0.0.1:6379 (the Celery workers' broker in
# tests/test_workers.py, the answer cache in tests/test_service.py). Installs or starts what it may, and says in one line what it
# cannot, before any test runs. Never stops anything.
set -uo pipefail

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "test prerequisites: installing Debian's chromium for the browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || echo "test prerequisites: could not install chromium (apt-get failed): the browser tests will fail"
  else
    echo "test prerequisites: chromium missing at $chromium and this user cannot install it (run: sudo apt-get install chromium): the browser tests will fail"
  fi
fi

if command -v pg_isready >/dev/null; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    cluster=$(ls /etc/postgresql 2>/dev/null | head -n1)
    if [[ -n "$cluster" ]] && command -v pg_ctlcluster >/dev/null; then
      echo "test prerequisites: starting PostgreSQL $cluster for the production-profile tests"
      pg_ctlcluster --skip-systemctl-redirect "$cluster" main start >/dev/null 2>&1 \
        || echo "test prerequisites: could not start PostgreSQL $cluster: the production-profile tests will fail"
    else
      echo "test prerequisites: PostgreSQL is not running on 127.0.0.1:5432 and no cluster to start: the production-profile tests will fail"
    fi
  fi
else
  echo "test prerequisites: no PostgreSQL client tools (pg_isready): the production-profile tests need PostgreSQL on 127.0.0.1:5432"
fi
if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  :
elif command -v redis-server >/dev/null; then
  echo "test prerequisites: starting redis-server on 127.0.0.1:6379 for the workers tests"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null 2>&1 \
    || echo "test prerequisites: could not start redis-server: the workers tests will fail"
else
  echo "test prerequisites: no Redis on 127.0.0.1:6379 and no redis-server (apt-get install redis-server): the workers tests will fail"
fi
if ! command -v java >/dev/null; then
  echo "test prerequisites: no java on PATH: the Spark tests (tests/test_spark.py) need a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"
fi
exit 0
