#!/bin/sh
# The official image's first start: a cluster owned by POSTGRES_USER with the password from POSTGRES_PASSWORD_FILE,
# POSTGRES_DB made, connections from the network with a password; then the server in the foreground.
set -eu
mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -o postgres -m 600 "$POSTGRES_PASSWORD_FILE" /tmp/pw
  su postgres -c "initdb -D $PGDATA -E UTF8 --locale=C.UTF-8 -U $POSTGRES_USER --pwfile=/tmp/pw --auth=scram-sha-256" >/dev/null
  rm /tmp/pw
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
    | setpriv --reuid postgres --regid postgres --init-groups postgres --single -D "$PGDATA" postgres >/dev/null
fi
mkdir -p /var/run/postgresql && chown postgres /var/run/postgresql
exec setpriv --reuid postgres --regid postgres --init-groups postgres -D "$PGDATA"  # PID 1: SIGTERM stops it
