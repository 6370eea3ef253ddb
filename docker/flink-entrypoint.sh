#!/usr/bin/env bash
# Entry point of the zhongtai Flink image (docker/flink.Dockerfile), in the manner of the official Flink
# image's docker-entrypoint.sh:
#   jobmanager [ARGS]   the session JobManager in the foreground (docker/compose.yaml)
#   taskmanager [ARGS]  a TaskManager in the foreground
#   help                this text
#   anything else       run as given: the Flink Kubernetes Operator starts
#                       `bash -c "kubernetes-jobmanager.sh kubernetes-application"` (and the TaskManager
#                       likewise) with this script as the command; `zhongtai submit`, `flink ...` work too.
set -euo pipefail

case "${1:-help}" in
  jobmanager)
    shift
    exec "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@"
    ;;
  taskmanager)
    shift
    exec "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@"
    ;;
  help | --help | -h)
    sed -n '2,9p' "$0"
    ;;
  *)
    exec "$@"
    ;;
esac
