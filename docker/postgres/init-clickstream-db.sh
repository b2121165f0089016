#!/bin/bash
# Runs once, on the first start of the postgres container (an empty data volume): the official postgres
# image executes /docker-entrypoint-initdb.d/*.sh after creating POSTGRES_DB (Airflow's metadata database).
#
# Creates the clickstream session store: its own role and its own database, separate from Airflow's
# metadata. Names and password come from the compose file's environment (CLICKSTREAM_DB_*), the same
# variables that build the AIRFLOW_CONN_CLICKSTREAM_DEFAULT connection URI.
set -euo pipefail

: "${CLICKSTREAM_DB_NAME:?}" "${CLICKSTREAM_DB_USER:?}" "${CLICKSTREAM_DB_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$CLICKSTREAM_DB_NAME" -v db_user="$CLICKSTREAM_DB_USER" -v db_password="$CLICKSTREAM_DB_PASSWORD" <<'EOSQL'
CREATE ROLE :"db_user" LOGIN PASSWORD :'db_password';
CREATE DATABASE :"db" OWNER :"db_user";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
EOSQL
echo "clickstream: created database ${CLICKSTREAM_DB_NAME} owned by ${CLICKSTREAM_DB_USER}"
