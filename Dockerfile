# The production image: Apache Airflow 3.3.2 with the clickstream package (plugin, hook, operators) and its DAGs.
#
#   docker compose build            # or: docker build -t clickstream-airflow:0.1.0 .
#
# The base is the official image's Python 3.11 flavour of 3.3.2 (the package requires Python 3.11, and the
# plain `apache/airflow:3.3.2` tag defaults to a newer Python). The package is installed with the project's
# own lock, constraints.txt, so the container runs the same dependency versions the test suite ran.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

# Folders the compose file mounts named volumes on: a volume created empty takes the owner of the image's
# folder, so the `airflow` user (uid 50000, gid 0) can write to it.
USER root
RUN mkdir -p /opt/airflow/auth /opt/airflow/datasets \
 && chown -R airflow:0 /opt/airflow/auth /opt/airflow/datasets \
 && chmod -R g+rwX /opt/airflow/auth /opt/airflow/datasets
USER airflow

# Install the package (not editable): the wheel carries include/sql as clickstream/sql, and registers the
# Airflow plugin through its `airflow.plugins` entry point. Its extras `s3` (datasets on S3-compatible storage,
# s3fs) and `celery` (the compose file's `celery` profile) come at the versions the scale-out test ran. Only
# what the build needs is copied, so editing DAGs or docs does not invalidate this layer.
COPY --chown=airflow:0 pyproject.toml README.md constraints.txt /opt/clickstream/src/
COPY --chown=airflow:0 plugins/ /opt/clickstream/src/plugins/
COPY --chown=airflow:0 include/ /opt/clickstream/src/include/
RUN pip install --no-cache-dir --constraint /opt/clickstream/src/constraints.txt "/opt/clickstream/src[s3,celery]" \
 && python -c "import clickstream.hooks, clickstream.store.sql as s; s.queries('postgresql')"

# The one-shot initialisation the compose file's airflow-init service runs.
COPY --chown=airflow:0 docker/airflow-init.sh /opt/clickstream/airflow-init.sh

# DAGs are baked into the image: an immutable, versioned deployment (see README "Production").
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
