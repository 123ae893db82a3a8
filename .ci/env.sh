# Shared paths for every baton script. Source it; it sets nothing else.
# Built artifacts (venv, wheels, Go binaries, models) live in a cache directory keyed by
# content hash, so a second run reuses them.
export BATON_CACHE="${BATON_CACHE:-$HOME/.cache/baton}"
export BATON_VENV="${BATON_VENV:-$BATON_CACHE/venv}"
export PATH="$BATON_VENV/bin:$BATON_CACHE/bin:$PATH"
# Ray 2.60 enables token auth by default; local test clusters stay on loopback without it.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0
