#!/bin/sh
# docker-compose's first job: refuse to start while a secret is missing, still the placeholder
# from .env.example, or too short, or while the Fernet key is not one (Airflow could then
# encrypt no connection or variable). The JWT secret signs Airflow's API tokens with HS512,
# whose key should be at least as long as its 64-byte digest (RFC 7518, section 3.2).
# The secrets in URL_SECRETS are pasted unencoded into connection URLs (SQLAlchemy's, Celery's
# broker, MLflow's stores), where / + @ # ? % and the like break them: letters, digits, - _ . and ~
# only (RFC 3986's unreserved characters, which a URL's userinfo holds as they are; kombu and
# SQLAlchemy read them back unchanged). Every other service waits for this one to succeed.
# Usage: check-secrets.sh ENV_EXAMPLE (the secrets themselves come from the environment).
example=${1:-/co2cast/.env.example}
failed=0
URL_SECRETS=" POSTGRES_PASSWORD REDIS_PASSWORD "
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  name=${line%%=*}
  placeholder=${line#*=}
  case "$name" in *FERNET_KEY*) kind=fernet ;; *JWT_SECRET*) kind=jwt ;; *PASSWORD*|*SECRET*) kind=secret ;; *) continue ;; esac
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "co2cast: $name is not set: put a secret in .env" >&2; failed=1
  elif [ "$value" = "$placeholder" ]; then
    echo "co2cast: $name is still the .env.example placeholder: replace it in .env" >&2; failed=1
  elif [ "$kind" = fernet ] && ! printf '%s' "$value" | grep -Eq '^[A-Za-z0-9_-]{43}=(,[A-Za-z0-9_-]{43}=)*$'; then
    # A Fernet key is 32 bytes in url-safe base64: 44 characters, the last one the padding
    # (while rotating, Airflow takes new,old: a comma-separated list of keys).
    echo "co2cast: $name is not a Fernet key (32 url-safe base64-encoded bytes, 44 characters ending in =): see .env.example" >&2
    failed=1
  elif [ "$kind" = jwt ] && [ ${#value} -lt 64 ]; then
    echo "co2cast: $name is shorter than 64 characters, the least HS512 wants (Airflow signs its API tokens with it): see .env.example" >&2
    failed=1
  elif case "$URL_SECRETS" in *" $name "*) true ;; *) false ;; esac && case "$value" in *[!A-Za-z0-9._~-]*) true ;; *) false ;; esac; then
    echo "co2cast: $name has a character other than A-Z a-z 0-9 - _ . ~ (it goes into a connection URL unencoded): see .env.example" >&2
    failed=1
  elif [ ${#value} -lt 16 ]; then
    echo "co2cast: $name is shorter than 16 characters: use a long random value" >&2; failed=1
  fi
done < "$example"
[ $failed -eq 0 ] && echo "co2cast: secrets set"
exit $failed
