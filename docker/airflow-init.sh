#!/usr/bin/env bash
# One-shot initialisation, run by the `airflow-init` service before the other Airflow services start
# (they wait for it with `condition: service_completed_successfully`). Safe to run again: every step is
# idempotent.
#   1. Airflow's metadata database: `airflow db migrate` (creates or upgrades it).
#   2. The admin user: SimpleAuthManager reads users from [core] simple_auth_manager_users and their
#      passwords from [core] simple_auth_manager_passwords_file; we write AIRFLOW_ADMIN_PASSWORD there.
#   3. The session store: the package's own migrations, on the `clickstream_default` Connection
#      (AIRFLOW_CONN_CLICKSTREAM_DEFAULT).
set -euo pipefail

# .env.example's placeholders must not reach production: refuse to initialise with any of them.
checked=(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW_CONN_CLICKSTREAM_DEFAULT AIRFLOW_ADMIN_PASSWORD
         AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY AIRFLOW__CORE__FERNET_KEY)
# The object storage's connection (MinIO, the `celery` profile) only when something uses it: the
# CeleryExecutor (the profile's workers write datasets there) or a base path on it. Its secret comes from
# CLICKSTREAM_S3_SECRET_KEY, which a stack without the profile need not set.
if [[ ${AIRFLOW__CORE__EXECUTOR:-} == *CeleryExecutor* ||
      ${AIRFLOW__CLICKSTREAM__DATASET_BASE_PATH:-} == *://clickstream_lake@* ]]; then
  if ! python -c 'import json, os, sys; sys.exit(not json.loads(os.environ.get("AIRFLOW_CONN_CLICKSTREAM_LAKE") or "{}").get("password"))'; then
    echo "[init] error: AIRFLOW_CONN_CLICKSTREAM_LAKE has no secret: set CLICKSTREAM_S3_SECRET_KEY (and MINIO_ROOT_PASSWORD) in .env for the celery profile (see .env.example)" >&2
    exit 1
  fi
  checked+=(AIRFLOW_CONN_CLICKSTREAM_LAKE)
fi
placeholders=()
for var in "${checked[@]}"; do
  [[ ${!var:-} == *change-me* ]] && placeholders+=("$var")
done
if (( ${#placeholders[@]} )); then
  echo "[init] error: still the .env.example placeholder (change-me...): ${placeholders[*]}; set real secrets in .env" >&2
  exit 1
fi

echo "[init] migrating Airflow's metadata database"
airflow db migrate

echo "[init] admin user '${AIRFLOW_ADMIN_USER:?}' (SimpleAuthManager)"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
passwords[os.environ["AIRFLOW_ADMIN_USER"]] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(passwords) + "\n")
path.chmod(0o600)
PY

echo "[init] applying session-store migrations (connection clickstream_default)"
python - <<'PY'
from clickstream.hooks import ClickstreamHook

with ClickstreamHook() as hook:
    applied = hook.migrate()
    print(f"[init] session store on {hook.store.dialect}: applied {applied or 'nothing (up to date)'}")
PY
echo "[init] done"
