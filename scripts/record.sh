# shellcheck shell=bash
# RECORD=DIR for the measuring scripts, as `--record DIR` is for echo-lab's measuring commands
# (echo-lab/src/report/record.rs, the same format): with RECORD set, the script's standard
# output is shown and kept and, if the script succeeds, written to DIR/YYYY-MM-DD-SLUG.md, a
# measurement record: the command line, the date and time (UTC), the machine (kernel, CPU,
# cores, memory, the load average at the start and at the end), the commit, the settings, the
# output as printed, and how to read it. The same command on the same day replaces its record;
# on another day it adds one. docs/measurements/README.md says how records are kept and quoted.
#
# In a script run from the repository's root, once its settings have their defaults:
#
#   source scripts/record.sh
#   record_start BASE_SLUG "how to read it" SETTING...
#
# Each SETTING is the name of an environment variable the script reads. Those given in the
# environment go into the command line and, after BASE_SLUG, into the record's name (a number
# before its name, `3rounds`; other values as they are); a name written `-NAME` is left out of
# the name (BASE_SLUG has it already, or it is where output goes).

record_start() {
    [[ -n "${RECORD:-}" ]] || return 0
    local base=$1 var given value
    _rec_note=$2
    shift 2
    _rec_settings=()
    _rec_cmd="RECORD=$(_record_quote "$RECORD")"
    local slug=$base
    for var in "$@"; do
        given=${var#-}
        _rec_settings+=("$given")
        printenv "$given" >/dev/null || continue
        value=${!given}
        _rec_cmd+=" $given=$(_record_quote "$value")"
        [[ $var == -* ]] && continue
        if [[ $value =~ ^[0-9.\ ]+$ ]]; then
            slug+="-${value}${given,,}"
        else
            slug+="-$value"
        fi
    done
    _rec_cmd+=" $(_record_quote "$0")"
    _rec_slug=$(printf '%s' "$slug" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9.]+/-/g; s/^[-.]+//; s/[-.]+$//')
    _rec_date=$(date -u +%F)
    _rec_time=$(date -u +%T)
    _rec_start=$SECONDS
    _rec_load0=$(cut -d' ' -f1-3 /proc/loadavg)
    _rec_out=$(mktemp)
    exec 3>&1
    exec > >(tee "$_rec_out")
    _rec_tee=$!
    trap '_record_finish $?' EXIT
}

# Single-quoted for a shell, where it needs to be.
_record_quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./,:=+@%-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

_record_finish() {
    local status=$1 elapsed=$((SECONDS - _rec_start))
    local load1 commit head var path from value
    load1=$(cut -d' ' -f1-3 /proc/loadavg)
    # Back to the terminal; tee ends with the pipe, once it has written everything.
    exec >&3 3>&-
    wait "$_rec_tee" 2>/dev/null || true
    if ((status != 0)); then
        echo "record.sh: the script failed (exit $status): no record written" >&2
        rm -f "$_rec_out"
        return
    fi
    commit="unknown (not run in the project's repository)"
    if [[ -f "$(git rev-parse --show-toplevel 2>/dev/null)/echo-lab/Cargo.toml" ]] \
        && head=$(git rev-parse --short HEAD 2>/dev/null); then
        commit=$head
        [[ -z "$(git status --porcelain --untracked-files=no)" ]] || commit+=", with uncommitted changes"
    fi
    mkdir -p "$RECORD"
    path="$RECORD/$_rec_date-$_rec_slug.md"
    {
        printf '# %s, %s\n\n' "$(basename "$0")" "$_rec_date"
        printf 'A measurement record written by the command below (`RECORD`); never edited by hand. '
        printf '[README.md](README.md) in this directory says how records are made and quoted.\n\n'
        printf '## Command\n\n```text\n%s\n```\n\n' "$_rec_cmd"
        printf '## Run\n\n| | |\n|---|---|\n'
        printf '| date | %s %s UTC, took %d s |\n' "$_rec_date" "$_rec_time" "$elapsed"
        printf '| commit | %s |\n' "$commit"
        printf '| kernel | Linux %s |\n' "$(cat /proc/sys/kernel/osrelease)"
        printf '| CPU | %s, %s cores online |\n' \
            "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(nproc)"
        printf '| memory | %s |\n' "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
        printf '| load average (1, 5, 15 min) | %s at the start, %s at the end |\n\n' "$_rec_load0" "$load1"
        printf '## Settings\n\n| setting | value | |\n|---|---|---|\n'
        for var in "${_rec_settings[@]}"; do
            if printenv "$var" >/dev/null; then from=given; else from=default; fi
            value=${!var-}
            [[ -z $value ]] || value="\`$value\`"
            printf '| `%s` | %s | %s |\n' "$var" "$value" "$from"
        done
        printf '\n## Output\n\nAs printed on standard output:\n\n```text\n'
        printf '%s\n' "$(cat "$_rec_out")"
        printf '```\n\n## How to read it\n\n%s\n' "$_rec_note"
    } >"$path"
    rm -f "$_rec_out"
    echo "record.sh: recorded in $path" >&2
}
