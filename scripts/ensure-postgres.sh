#!/usr/bin/env bash
# Make sure the test suite can start a throwaway PostgreSQL cluster (tests/postgres.py):
# initdb and pg_ctl on PATH or under /usr/lib/postgresql/<version>/bin. Installs Debian's
# postgresql package when they are missing and we can (root with apt-get, as in CI);
# otherwise says in one line what to do. A PostgreSQL DATABASE_URL means the suite uses that
# server instead, so nothing is needed here.
set -euo pipefail

case "${DATABASE_URL:-}" in
postgresql*|postgres:*) exit 0 ;;
esac

have_postgres() {
	if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		return 0
	fi
	compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null
}

have_postgres && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-postgres: installing Debian's postgresql package for the tests" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# The package's own cluster is not used (the tests make theirs), so it is not started.
	apt-get install -y -qq --no-install-recommends postgresql >/dev/null
	have_postgres && exit 0
fi

echo "make test: PostgreSQL is needed: run 'apt-get install postgresql' as root (or make test as root), or set DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB to a server where USER may create databases" >&2
exit 1
