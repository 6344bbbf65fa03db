#!/usr/bin/env bash
# Hand the step's SETTING_<NAME> variables to the job's later steps as <NAME> (through $GITHUB_ENV).
# The workflow lists each name it passes, so a repository variable can never set PATH, LD_PRELOAD,
# BASH_ENV or a setting the job must not take (DEPLOY_TARGET=local from a copied .env.example).
# An empty value (a variable that is not set) is skipped: the setting keeps its default. A value
# must be one line: a line break would smuggle another NAME=value line into $GITHUB_ENV.
set -euo pipefail
while IFS= read -r variable; do
  value="${!variable}"
  name="${variable#SETTING_}"
  [ -n "$value" ] || continue
  case "$value" in
    *$'\n'* | *$'\r'*)
      echo "::error title=Bad setting::the variable $name must be a single line"
      exit 1
      ;;
  esac
  echo "$name=$value" >> "$GITHUB_ENV"
  echo "$name is set"
done < <(compgen -v SETTING_)
