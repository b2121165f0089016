#!/bin/sh
# One-shot initialisation of MinIO, run by the `minio-init` service (profile `celery`) once `minio` is
# healthy; the Airflow workers wait for it. Safe to run again: every step is idempotent.
#   1. the bucket datasets go to ($CLICKSTREAM_S3_BUCKET);
#   2. Airflow's own access key ($CLICKSTREAM_S3_ACCESS_KEY), with MinIO's built-in `readwrite` policy, so
#      Airflow never holds the root credentials.
# Runs in the minio/mc image (POSIX sh, no bash).
set -eu

# The two secrets are not `:?` in docker-compose.yaml (that would stop the default stack too): checked here.
# MinIO wants at least 8 characters for both.
for var in MINIO_ROOT_PASSWORD CLICKSTREAM_S3_SECRET_KEY; do
  eval "value=\${$var:-}"
  if [ ${#value} -lt 8 ]; then
    echo "[minio-init] error: $var is unset or shorter than 8 characters: set it in .env for the celery profile (see .env.example)" >&2
    exit 1
  fi
done
case "${CLICKSTREAM_S3_SECRET_KEY}${MINIO_ROOT_PASSWORD}" in
  *change-me*)
    echo "[minio-init] error: still the .env.example placeholder (change-me...) in MINIO_ROOT_PASSWORD or CLICKSTREAM_S3_SECRET_KEY; set real secrets in .env" >&2
    exit 1
    ;;
esac

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
echo "[minio-init] bucket ${CLICKSTREAM_S3_BUCKET}"
mc mb --ignore-existing "local/${CLICKSTREAM_S3_BUCKET}"
echo "[minio-init] access key ${CLICKSTREAM_S3_ACCESS_KEY} (policy readwrite)"
mc admin user add local "$CLICKSTREAM_S3_ACCESS_KEY" "$CLICKSTREAM_S3_SECRET_KEY"
case "$(mc admin user info local "$CLICKSTREAM_S3_ACCESS_KEY")" in
  *readwrite*) ;;  # attached by an earlier run
  *) mc admin policy attach local readwrite --user "$CLICKSTREAM_S3_ACCESS_KEY" ;;
esac
echo "[minio-init] done"
